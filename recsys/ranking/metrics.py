"""Top-k ranking metrics with the Microsoft Recommenders definitions (binary relevance)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ndcg_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """DCG of the top-k over the ideal DCG of min(k, |relevant|) hits."""
    if not relevant:
        return 0.0
    gains = [1.0 / np.log2(r + 2) for r, item in enumerate(recommended[:k]) if item in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(relevant))))
    return float(sum(gains) / ideal)


def precision_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """Hits in the top-k over k (MS Recommenders divides by k even for shorter lists)."""
    return sum(1 for item in recommended[:k] if item in relevant) / k


def recall_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for item in recommended[:k] if item in relevant) / len(relevant)


def map_at_k(recommended: Sequence[str], relevant: set[str], k: int) -> float:
    """Average precision at the hit positions, over |relevant| (the MS Recommenders map_at_k)."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for r, item in enumerate(recommended[:k]):
        if item in relevant:
            hits += 1
            total += hits / (r + 1)
    return total / len(relevant)
