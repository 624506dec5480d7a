"""The diversify stage's re-ranker, chosen by `cfg.reranker`, over the `mmr_pool` most relevant kept candidates.

MMR runs exactly as it did before there was a choice (stages.diversify), so default answers are unchanged.
The others (recsys/ranking/{calibrated,category_caps,exposure}.py) take what `prepare` gathered for them:
the categories of the user's history (calibrated: the distribution the list should follow) and the
candidates' `item_n_users` (longtail: popularity as distinct training users, the feature the ranker sees).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsys.pipeline import stages
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.types import ItemView, UserView, categories_of
from recsys.ranking.calibrated import calibrated
from recsys.ranking.category_caps import capped
from recsys.ranking.exposure import exposure_rerank

if TYPE_CHECKING:
    from recsys.pipeline.recommend import Prepared

POPULARITY_FEATURE = "item_n_users"


def history_views_needed(user: UserView, cfg: PipelineConfig) -> int:
    """How many of the most recent history items' views `prepare` fetches: the affinity window, or the whole
    (windowed) history when the calibrated re-ranker needs its category distribution."""
    return max(cfg.affinity_window, len(user.history)) if cfg.reranker == "calibrated" else cfg.affinity_window


def popularity(items: list[ItemView], rows: np.ndarray, names: list[str]) -> np.ndarray:
    """`item_n_users` of the given candidate rows (NaN when the feature or the item is unknown)."""
    out = np.full(len(rows), np.nan)
    if POPULARITY_FEATURE not in names:
        return out
    col = names.index(POPULARITY_FEATURE)
    for j, i in enumerate(rows.tolist()):
        it = items[i]
        if it.found and len(it.values) > col:
            out[j] = it.values[col]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]: the ranker's scores have no fixed range, so λ would mean nothing without it."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros(len(x))


def diversify(prep: Prepared, keep: np.ndarray, k: int, lam: float, cfg: PipelineConfig) -> np.ndarray:
    """Candidate indices in display order, re-ranked by cfg.reranker (`lam` is MMR's λ)."""
    if cfg.reranker == "mmr":
        return stages.diversify(prep.cand_emb, prep.items, prep.scores, keep, k, lam, cfg.mmr_pool)
    top = stages.top_k(prep.scores, keep, max(cfg.mmr_pool, k))
    if not len(top):
        return top
    rel = np.asarray(prep.scores[top], dtype=np.float64)
    cats = categories_of(prep.items, top)
    if cfg.reranker == "calibrated":
        idx = calibrated(_unit(rel), k, cfg.calibration_lambda, cats, prep.history_categories)
    elif cfg.reranker == "category_caps":
        idx = capped(rel, k, cfg.category_cap, cats)
    elif cfg.reranker == "longtail":
        idx = exposure_rerank(rel, k, cfg.longtail_beta, popularity(prep.items, top, prep.item_feature_names))
    else:  # PipelineConfig rejects other names; this is a guard against a new name without a branch
        raise ValueError(f"unknown reranker {cfg.reranker!r}")
    return top[idx]
