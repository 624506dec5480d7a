"""The stages of the Recommend pipeline (their order is declared in recommend.py). Each is a plain
function, tested on its own: three I/O stages against the feature and candidate sources, then CPU stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.model import ItemEmbeddings, ServingModel
from recsys.pipeline.types import (
    CandidateList,
    CandidateSource,
    FeatureSource,
    ItemBatch,
    ItemView,
    RankedItem,
    UserView,
    categories_of,
)
from recsys.ranking.features import RankingInputs, assemble, to_matrix
from recsys.ranking.mmr import mmr, similarity_matrix


async def fetch_user(features: FeatureSource, user_id: str, version: str = "") -> UserView:
    """The user's features and whole history (every item they interacted with stays excluded)."""
    return await features.get_user(user_id, 0, version)


async def retrieve(candidates: CandidateSource, user: UserView, cfg: PipelineConfig, attributes: dict[str, str],
                   include_seen: bool, version: str = "") -> CandidateList:
    """Candidates from the most recent `history_window` items; older seen items are excluded too.

    Trims `user.history` to that window: it is the history every later stage sees."""
    older = user.history[: -cfg.history_window] if len(user.history) > cfg.history_window else []
    user.history = user.history[-cfg.history_window:]
    # Request attributes only describe users we have never seen; stored ones win otherwise.
    attrs = user.attributes if user.found and user.attributes else attributes
    return await candidates.retrieve(user.user_id, user.history, [] if include_seen else older, cfg.n_candidates,
                                     attrs, include_seen, version, cfg.source_quotas)


async def fetch_items(features: FeatureSource, cands: CandidateList, user: UserView, cfg: PipelineConfig,
                      version: str = "",
                      n_history: int | None = None) -> tuple[list[str], list[ItemView], list[ItemView]]:
    """(item feature names, the candidates' item views, the `n_history` (default `affinity_window`) most recent
    history items' views), in one batch call."""
    recent = user.history[-(cfg.affinity_window if n_history is None else n_history):]
    names, views = await features.get_items(cands.item_ids + recent, version)
    return names, views[: len(cands.item_ids)], views[len(cands.item_ids):]


def item_columns(items: Sequence[ItemView], n: int, fi: int) -> tuple[np.ndarray, list[list[str]]]:
    """The candidates' item features [n, fi] (NaN rows for items the store lacks or holds under other
    features: missing to LightGBM) and category lists. An ItemBatch gives its columns as fetched."""
    if isinstance(items, ItemBatch) and items.values.shape == (n, fi):
        values = np.where(items.found[:, None], items.values, np.float32(np.nan)).astype(np.float32, copy=False)
        return values, items.categories
    if n and all(it.found and len(it.values) == fi for it in items):
        values = np.stack([it.values for it in items]).astype(np.float32, copy=False).reshape(n, fi)
    else:
        values = np.full((n, fi), np.nan, dtype=np.float32)
        for i, it in enumerate(items):
            if it.found and len(it.values) == fi:
                values[i] = it.values
    return values, [it.categories for it in items]


def feature_columns(emb: ItemEmbeddings, user: UserView, cands: CandidateList, item_feature_names: list[str],
                    items: list[ItemView], history: list[ItemView],
                    cand_emb: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All named feature columns for the candidates (rows aligned with cands.item_ids). `cand_emb` are the
    candidates' unit embeddings when the caller already looked them up."""
    n = len(cands.item_ids)
    fi = len(item_feature_names)
    item_values, item_categories = item_columns(items, n, fi)
    hist_ids = [h.item_id for h in history]
    hist_emb = None
    if hist_ids:
        e = emb.lookup(hist_ids).mean(axis=0)
        norm = float(np.linalg.norm(e))
        hist_emb = e / norm if norm > 0 else None
    inputs = RankingInputs(
        user_feature_names=user.feature_names,
        user_values=user.values,
        history_categories=[h.categories for h in history],
        history_embedding=hist_emb,
        history_len=len(user.history),
        score_names=cands.score_names,
        relative_score_names=cands.relative_score_names,
        candidate_scores=cands.scores,
        item_feature_names=item_feature_names,
        item_values=item_values,
        item_categories=item_categories,
        item_embeddings=emb.lookup(cands.item_ids) if cand_emb is None else cand_emb,
    )
    return assemble(inputs)


def featurize(model: ServingModel, user: UserView, cands: CandidateList, item_feature_names: list[str],
              items: list[ItemView], history: list[ItemView], cand_emb: np.ndarray) -> np.ndarray:
    """The ranker's input matrix: its features, in its order."""
    cols = feature_columns(model.embeddings, user, cands, item_feature_names, items, history, cand_emb)
    return to_matrix(cols, model.ranker.feature_names, len(cands.item_ids))


def score(model: ServingModel, x: np.ndarray) -> np.ndarray:
    return model.ranker.score(x)


def filter_excluded(cands: CandidateList, exclude: list[str]) -> np.ndarray:
    """Indices of the candidates the request did not exclude, in candidate order."""
    if not exclude:
        return np.arange(len(cands.item_ids))
    banned = set(exclude)
    return np.array([i for i, x in enumerate(cands.item_ids) if x not in banned], dtype=np.int64)


def top_k(scores: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """The k best of the kept candidates by score (ties keep candidate order)."""
    return keep[np.argsort(-scores[keep], kind="stable")[:k]]


def diversify(cand_emb: np.ndarray, items: list[ItemView], scores: np.ndarray, keep: np.ndarray, k: int,
              lam: float, pool: int = 100) -> np.ndarray:
    """MMR over the `pool` most relevant kept candidates; returns candidate indices in display order."""
    top = top_k(scores, keep, max(pool, k))
    if lam >= 1.0:
        return top[:k]
    sim = similarity_matrix(cand_emb[top], categories_of(items, top))
    return top[mmr(scores[top], k, lam, sim)]


def reserve_fresh(order: np.ndarray, cands: CandidateList, keep: np.ndarray, k: int, share: float) -> np.ndarray:
    """Give up to ceil(share * k) of the list's last places to items added since training.

    The ranker learned that items without interactions are poor candidates, which is true of trained
    items and says nothing about a new one: without a reserved place, a new item is never shown and so
    never gets the interactions that would teach the next model about it. Fresh candidates are placed by
    their retrieval-space score (the content-mapped vector's ALS score, else candidate order).
    """
    if share <= 0 or not len(cands.fresh_rows) or k <= 0:
        return order
    fresh = np.intersect1d(cands.fresh_rows, keep)
    slots = min(len(fresh), int(np.ceil(share * k)))
    shown = np.isin(order, fresh)
    need = slots - int(shown.sum())
    if need <= 0:
        return order
    waiting = fresh[~np.isin(fresh, order)]
    if "als_score" in cands.score_names:
        col = cands.scores[waiting, cands.score_names.index("als_score")]
        waiting = waiting[np.argsort(-np.nan_to_num(col, nan=-np.inf), kind="stable")]
    extra = waiting[:need]
    # keep the list's own order; the replaced places are its last non-fresh ones
    drop = np.flatnonzero(~shown)[::-1][:max(0, len(order) + len(extra) - k)]
    kept = np.delete(order, drop)
    return np.concatenate([kept, extra]).astype(order.dtype)


def popularity_scores(cands: CandidateList) -> np.ndarray:
    """Fallback scores when the ranker cannot score: the retrieval popularity score (candidate order if none)."""
    if "pop_score" in cands.score_names and len(cands.item_ids):
        return np.nan_to_num(cands.scores[:, cands.score_names.index("pop_score")], nan=0.0).astype(np.float64)
    return np.zeros(len(cands.item_ids))


def explain(model: ServingModel, x: np.ndarray, rows: np.ndarray, top: int = 8) -> list[list[tuple[str, float, float]]]:
    """The `top` features by absolute contribution for each chosen row."""
    if len(rows) == 0:
        return []
    contrib = model.ranker.explain(x[rows])
    out = []
    for r, row in enumerate(rows):
        idx = np.argsort(-np.abs(contrib[r]))[:top]
        out.append([(model.ranker.feature_names[j], float(x[row, j]), float(contrib[r, j])) for j in idx])
    return out


def build_items(cands: CandidateList, items: list[ItemView], scores: np.ndarray, order: np.ndarray,
                contributions: list[list[tuple[str, float, float]]] | None) -> list[RankedItem]:
    out = []
    rows = order.tolist()
    for pos, (i, sources) in enumerate(zip(rows, cands.sources_at(rows), strict=True)):
        it = items[i]
        out.append(RankedItem(item_id=cands.item_ids[i], score=float(scores[i]), sources=sources,
                              title=it.title, categories=list(it.categories),
                              contributions=contributions[pos] if contributions else []))
    return out
