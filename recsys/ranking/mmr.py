"""Maximal Marginal Relevance re-ranking (Carbonell & Goldstein, 1998).

Greedily picks the item maximising  λ·relevance − (1−λ)·max similarity to the items already picked.
Relevance is min-max scaled per request so λ means the same thing whatever the model's score range.
Similarity blends cosine of item embeddings and Jaccard overlap of categories.
"""

from __future__ import annotations

import numpy as np


def similarity_matrix(embeddings: np.ndarray | None, categories: list[list[str]] | None,
                      embedding_weight: float = 0.5) -> np.ndarray | None:
    """Pairwise item similarity in [0, 1] from unit embeddings and/or category lists."""
    parts: list[tuple[float, np.ndarray]] = []
    if embeddings is not None and len(embeddings):
        cos = np.clip(embeddings @ embeddings.T, 0.0, 1.0)
        parts.append((embedding_weight, cos))
    if categories is not None and any(categories):
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, cats in enumerate(categories):
            for c in cats:
                rows.append(i)
                cols.append(vocab.setdefault(c, len(vocab)))
        onehot = np.zeros((len(categories), max(1, len(vocab))), dtype=np.float32)
        onehot[rows, cols] = 1.0
        inter = onehot @ onehot.T
        sizes = onehot.sum(axis=1)
        union = sizes[:, None] + sizes[None, :] - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        parts.append((1.0 - embedding_weight if parts else 1.0, jac))
    if not parts:
        return None
    total_w = sum(w for w, _ in parts)
    return sum(w * m for w, m in parts) / total_w


def mmr(relevance: np.ndarray, k: int, lam: float, similarity: np.ndarray | None) -> np.ndarray:
    """Indices of the k items chosen by MMR, in display order. λ=1 is a pure sort by relevance."""
    n = len(relevance)
    k = min(k, n)
    order = np.argsort(-relevance, kind="stable")
    if lam >= 1.0 or similarity is None or k <= 1:
        return order[:k]
    lo, hi = float(relevance.min()), float(relevance.max())
    rel = (relevance - lo) / (hi - lo) if hi > lo else np.zeros(n)
    chosen = [int(order[0])]
    available = np.ones(n, dtype=bool)
    available[chosen[0]] = False
    max_sim = similarity[chosen[0]].astype(np.float64).copy()
    for _ in range(k - 1):
        gain = lam * rel - (1.0 - lam) * max_sim
        gain[~available] = -np.inf
        nxt = int(np.argmax(gain))
        chosen.append(nxt)
        available[nxt] = False
        np.maximum(max_sim, similarity[nxt], out=max_sim)
    return np.array(chosen, dtype=np.int64)
