"""The CPU stages of the Recommend pipeline. Each is a plain function, tested on its own."""

from __future__ import annotations

import numpy as np

from recsys.pipeline.model import ItemEmbeddings, ServingModel
from recsys.pipeline.types import CandidateList, ItemView, RankedItem, UserView
from recsys.ranking.features import RankingInputs, assemble, to_matrix
from recsys.ranking.mmr import mmr, similarity_matrix


def feature_columns(emb: ItemEmbeddings, user: UserView, cands: CandidateList, item_feature_names: list[str],
                    items: list[ItemView], history: list[ItemView],
                    cand_emb: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All named feature columns for the candidates (rows aligned with cands.item_ids). `cand_emb` are the
    candidates' unit embeddings when the caller already looked them up."""
    n = len(cands.item_ids)
    fi = len(item_feature_names)
    item_values = np.full((n, fi), np.nan, dtype=np.float32)
    for i, it in enumerate(items):
        if it.found and len(it.values) == fi:
            item_values[i] = it.values
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
        candidate_scores=cands.scores,
        item_feature_names=item_feature_names,
        item_values=item_values,
        item_categories=[it.categories for it in items],
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


def diversify(cand_emb: np.ndarray, items: list[ItemView], scores: np.ndarray, k: int, lam: float,
              pool: int = 100) -> np.ndarray:
    """MMR over the `pool` most relevant candidates; returns candidate indices in display order."""
    top = np.argsort(-scores, kind="stable")[: max(pool, k)]
    if lam >= 1.0:
        return top[:k]
    sim = similarity_matrix(cand_emb[top], [items[i].categories for i in top])
    return top[mmr(scores[top], k, lam, sim)]


def popularity_order(cands: CandidateList, k: int) -> np.ndarray:
    """Fallback order when the ranker cannot score: the retrieval popularity score."""
    if "pop_score" in cands.score_names and len(cands.item_ids):
        pop = np.nan_to_num(cands.scores[:, cands.score_names.index("pop_score")], nan=0.0)
        return np.argsort(-pop, kind="stable")[:k]
    return np.arange(min(k, len(cands.item_ids)))


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
    for pos, i in enumerate(order.tolist()):
        it = items[i]
        out.append(RankedItem(item_id=cands.item_ids[i], score=float(scores[i]), sources=cands.sources[i],
                              title=it.title, categories=list(it.categories),
                              contributions=contributions[pos] if contributions else []))
    return out
