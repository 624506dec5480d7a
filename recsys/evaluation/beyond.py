"""Beyond-accuracy metrics of a set of top-k lists: catalog coverage, intra-list diversity, novelty,
exposure concentration (Gini) and accuracy by user segment.

Accuracy alone cannot tell a diversified list from a narrow one, or a long-tail recommender from a
popularity chart; these metrics can, and they are computed identically for every system so that the
numbers sit side by side. Every function takes plain `{user: [item ids in display order]}` dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# ILD and the similarity it uses live beside the other list metrics (the trainer's re-ranker choice uses them)
from recsys.ranking.metrics import ItemSimilarity as ItemSimilarity
from recsys.ranking.metrics import intra_list_diversity as intra_list_diversity
from recsys.ranking.metrics import ndcg_at_k

Lists = Mapping[str, Sequence[str]]
SEGMENTS = ("light", "medium", "heavy")


def catalog_coverage(recs: Lists, catalog_size: int, k: int) -> float:
    """Distinct items appearing in any top-k list, over the number of catalog items.

    The catalog is every item the system could recommend (all items of the dataset), so a popularity
    chart scores about k / catalog_size and a recommender that reaches the long tail approaches 1.
    """
    if catalog_size <= 0:
        return 0.0
    return len({i for items in recs.values() for i in items[:k]}) / catalog_size


def novelty(recs: Lists, popularity: Mapping[str, int], n_users: int, k: int) -> float:
    """Mean self-information −log2(pop(i) / n_users) of recommended items, in bits.

    pop(i) is the number of distinct training users who interacted with item i; items unseen in training
    count as pop 1 (the least popular possible, so they are the most novel, without an infinite value).
    Averaged over each user's list, then over users: higher means less popular, more surprising items.
    """
    if n_users <= 0:
        return 0.0
    per_user = []
    for items in recs.values():
        pops = np.array([max(popularity.get(i, 0), 1) for i in items[:k]], dtype=np.float64)
        if len(pops):
            per_user.append(float(np.mean(-np.log2(np.minimum(pops, n_users) / n_users))))
    return float(np.mean(per_user)) if per_user else 0.0


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all equal, → 1 when one entry holds everything.

    G = Σ_i (2i − n − 1) c_(i) / (n Σ c), with c sorted ascending and i = 1..n.
    """
    c = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(c), float(c.sum())
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * c) / (n * total))


def exposure_gini(recs: Lists, catalog: Sequence[str], k: int) -> float:
    """Gini of how often each catalog item is recommended (items never recommended count as 0).

    Measures exposure concentration: a popularity chart that shows every user the same k items is near 1.
    """
    index = {x: j for j, x in enumerate(catalog)}
    counts = np.zeros(len(index), dtype=np.int64)
    for items in recs.values():
        for i in items[:k]:
            j = index.get(i)
            if j is not None:
                counts[j] += 1
    return gini(counts)


def user_segments(history_len: Mapping[str, int]) -> dict[str, list[str]]:
    """Users split into tertiles of training-history length: light, medium, heavy.

    Users are sorted by (history length, user id) and cut into three groups of equal size (the first
    groups get one more when the count does not divide by 3), so every segment is populated even when many
    users share a length; users with the same length may then straddle a boundary.
    """
    users = sorted(history_len, key=lambda u: (history_len[u], u))
    parts = np.array_split(np.arange(len(users)), len(SEGMENTS))
    return {name: [users[i] for i in part] for name, part in zip(SEGMENTS, parts, strict=True)}


def ndcg_by_segment(
    recs: Lists, truth: Mapping[str, set[str]], segments: Mapping[str, list[str]], k: int
) -> dict[str, float]:
    """Mean nDCG@k of each segment's users (NaN for an empty segment)."""
    out = {}
    for name, users in segments.items():
        vals = [ndcg_at_k(list(recs.get(u, [])), truth[u], k) for u in users]
        out[name] = float(np.mean(vals)) if vals else float("nan")
    return out
