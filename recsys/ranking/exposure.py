"""Exposure-aware re-ranking: trade a stated share β of relevance for long-tail exposure.

score = (1−β)·rel + β·longtail, with rel the relevance min-max scaled over the pool and longtail =
1 − min-max scaled log(1 + popularity) over the pool (the least popular item of the pool scores 1).
β = 0 is the relevance order; β = 1 orders by unpopularity. Unknown popularity (NaN) counts as 0.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros(len(x))


def longtail_scores(popularity: np.ndarray) -> np.ndarray:
    """1 for the pool's least popular item, 0 for its most popular (0 for all when they are equal)."""
    logpop = np.log1p(np.clip(np.nan_to_num(np.asarray(popularity, np.float64), nan=0.0), 0.0, None))
    scaled = _unit(logpop)
    return 1.0 - scaled if float(logpop.max()) > float(logpop.min()) else scaled


def exposure_rerank(relevance: np.ndarray, k: int, beta: float, popularity: np.ndarray) -> np.ndarray:
    """Indices of the k best items by the blended score, in display order (ties keep relevance order)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"longtail_beta must be in [0, 1], got {beta}")
    rel = np.asarray(relevance, np.float64)
    order = np.argsort(-rel, kind="stable")
    if beta == 0.0 or len(rel) == 0:
        return order[:k]
    blended = (1.0 - beta) * _unit(rel) + beta * longtail_scores(popularity)
    return order[np.argsort(-blended[order], kind="stable")[:k]]
