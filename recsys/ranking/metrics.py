"""Top-k ranking metrics with the Microsoft Recommenders definitions (binary relevance)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from recsys.ranking.mmr import similarity_matrix


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


def _category_mix(categories: Sequence[Sequence[str]], vocab: dict[str, int]) -> np.ndarray:
    """Mean over items of p(g|i) (each item splits a unit weight over its categories; none adds no mass)."""
    mix = np.zeros(len(vocab))
    for cats in categories:
        uniq = [c for c in dict.fromkeys(cats) if c in vocab]
        for c in uniq:
            mix[vocab[c]] += 1.0 / len(uniq)
    return mix / max(1, len(categories))


def miscalibration(list_categories: Sequence[Sequence[str]], history_categories: Sequence[Sequence[str]],
                   alpha: float = 0.01) -> float | None:
    """Steck's (2018) KL miscalibration of one list: KL(p ‖ (1−α)q + αp), p the category mix of the user's
    history (normalized), q the list's (not normalized: uncategorized items dilute it, as in the calibrated
    re-ranker). 0 = the list mirrors the history; None when the history has no category to mirror."""
    vocab: dict[str, int] = {}
    for cats in (*history_categories, *list_categories):
        for c in cats:
            vocab.setdefault(c, len(vocab))
    p = _category_mix(history_categories, vocab)
    if p.sum() <= 0:
        return None
    p = p / p.sum()
    q = _category_mix(list_categories, vocab)
    support = p > 0
    qt = (1.0 - alpha) * q[support] + alpha * p[support]
    return float(np.sum(p[support] * (np.log(p[support]) - np.log(qt))))


def category_coverage(list_categories: Sequence[Sequence[str]],
                      history_categories: Sequence[Sequence[str]]) -> float | None:
    """Share of the categories in the user's history that the list shows at least once (None: no history
    categories). Complements miscalibration: a list can match the main tastes and still drop the minor ones."""
    wanted = {c for cats in history_categories for c in cats}
    if not wanted:
        return None
    shown = {c for cats in list_categories for c in cats}
    return len(wanted & shown) / len(wanted)


def intra_list_diversity(recs: Mapping[str, Sequence[str]], similarity: Callable[[list[str]], np.ndarray | None],
                         k: int) -> float:
    """Mean over users of the mean pairwise dissimilarity (1 − similarity) within each top-k list.

    `similarity(ids)` returns the [n, n] item similarity in [0, 1] (use `ItemSimilarity`, the one MMR
    uses, for every system so the numbers are comparable). Lists with fewer than two items have no
    pairs and are left out of the mean; 0 when no list has a pair.
    """
    out = []
    for items in recs.values():
        ids = list(items[:k])
        n = len(ids)
        if n < 2:
            continue
        sim = similarity(ids)
        if sim is None:  # no embeddings nor categories: nothing is similar to anything
            out.append(1.0)
            continue
        iu = np.triu_indices(n, 1)
        out.append(float(np.mean(1.0 - sim[iu])))
    return float(np.mean(out)) if out else 0.0


class ItemSimilarity:
    """The similarity MMR diversifies with (`recsys.ranking.mmr.similarity_matrix`): a blend of cosine of
    unit ALS item embeddings and Jaccard overlap of categories. Using it for ILD measures diversity in the
    very sense the re-ranker optimises, and the same object scores every system."""

    def __init__(self, embeddings: Callable[[list[str]], np.ndarray], categories: Mapping[str, list[str]]):
        self.embeddings = embeddings
        self.categories = categories

    def __call__(self, ids: list[str]) -> np.ndarray | None:
        return similarity_matrix(self.embeddings(ids), [self.categories.get(i, []) for i in ids])
