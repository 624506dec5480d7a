"""Per-category caps: at most `cap` items of any one category in the top k, filled from the next best.

An item with several categories counts once for each of them, and is taken only if every one of its
categories is still under the cap (so "at most cap per category" holds for every category). Items without
categories are never capped. When the pool runs out before k items pass, the best skipped items fill the
remaining places (a short list would be worse than a slightly over-represented category).
"""

from __future__ import annotations

import numpy as np


def capped(relevance: np.ndarray, k: int, cap: int, categories: list[list[str]]) -> np.ndarray:
    """Indices of the k items chosen, in display order (relevance order, then any fill)."""
    if cap < 1:
        raise ValueError(f"category_cap must be >= 1, got {cap}")
    order = np.argsort(-np.asarray(relevance), kind="stable")
    k = min(k, len(order))
    counts: dict[str, int] = {}
    taken: list[int] = []
    skipped: list[int] = []
    for i in order.tolist():
        if len(taken) == k:
            break
        cats = set(categories[i])
        if all(counts.get(c, 0) < cap for c in cats):
            taken.append(i)
            for c in cats:
                counts[c] = counts.get(c, 0) + 1
        else:
            skipped.append(i)
    taken += skipped[: k - len(taken)]
    return np.array(taken, dtype=np.int64)
