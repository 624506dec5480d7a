"""Calibrated recommendations (Steck, "Calibrated Recommendations", RecSys 2018).

Greedily picks the item maximising  (1−λ)·Σ relevance − λ·KL(p ‖ q̃(list)), where p is the category
distribution of the user's history and q that of the list so far, q̃ = (1−α)·q + α·p (α keeps KL finite).
As in the paper, an item with several categories splits its unit weight evenly among them, and every
item (history and list) weighs 1. An item without categories adds weight but no category mass (Steck's
formula with p(g|i) = 0): it shows nothing of the user's tastes, so it dilutes q.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from recsys.arrays import unique_ints


def category_vocab(*groups: list[list[str]]) -> dict[str, int]:
    """Column of each category, numbered in order of first appearance across the groups' item lists."""
    return {c: j for j, c in enumerate(dict.fromkeys(chain.from_iterable(chain.from_iterable(groups))))}


def category_distributions(categories: list[list[str]], vocab: dict[str, int]) -> np.ndarray:
    """[n, len(vocab)] rows p(g|i): 1/len(set(cats)) on each of the item's categories in `vocab`.

    One scatter for all items (a pool of a few hundred candidates cost a millisecond as a loop per item);
    the loop stays for the rare batch where an item repeats a category or names one outside `vocab`."""
    n = len(categories)
    out = np.zeros((n, len(vocab)), dtype=np.float64)
    lens = np.fromiter(map(len, categories), dtype=np.int64, count=n)
    total = int(lens.sum())
    if not total:
        return out
    get = vocab.get
    codes = np.fromiter((get(c, -1) for c in chain.from_iterable(categories)), dtype=np.int64, count=total)
    owner = np.repeat(np.arange(n), lens)
    if (codes < 0).any() or len(unique_ints(owner * len(vocab) + codes)) < total:
        for i, cats in enumerate(categories):
            cols = [vocab[c] for c in dict.fromkeys(cats) if c in vocab]
            if cats:
                out[i, cols] = 1.0 / len(set(cats))
        return out
    out[owner, codes] = 1.0 / lens[owner]
    return out


def _kl_on_support(ps: np.ndarray, log_ps: np.ndarray, qs: np.ndarray, alpha: float) -> np.ndarray:
    """KL(p ‖ (1−α)q + αp) for each row of q, given p's positive entries `ps`, their logs and q's columns
    there `qs` (the only ones KL reads). Private: recsys.evaluation.calibration has the metric."""
    qt = (1.0 - alpha) * qs + alpha * ps
    return (ps * (log_ps - np.log(qt))).sum(axis=-1)


def calibrated(relevance: np.ndarray, k: int, lam: float, item_categories: list[list[str]],
               history_categories: list[list[str]], alpha: float = 0.01) -> np.ndarray:
    """Indices of the k items chosen greedily, in display order. λ=0 (or no categorized history) is a
    pure sort by relevance; λ=1 is pure calibration."""
    n = len(relevance)
    k = min(k, n)
    order = np.argsort(-relevance, kind="stable")
    vocab = category_vocab(history_categories, item_categories)
    hist = category_distributions(history_categories, vocab)
    if lam <= 0.0 or not hist.any() or k <= 0:
        return order[:k]
    p = hist.sum(axis=0) / len(history_categories)
    p = p / p.sum()
    support = p > 0
    ps = p[support]
    log_ps = np.log(ps)
    # Restricted to the history's categories (the only ones KL reads) and computed once, so each step costs a
    # few array operations: the same ones on the same numbers in the same places (numpy's vectorised log can
    # round an element differently by where it sits in the array), so the same picks as over every category.
    items = category_distributions(item_categories, vocab)[:, support]
    relevance_part = (1.0 - lam) * np.asarray(relevance, dtype=np.float64)
    mass = np.zeros(len(ps))
    chosen: list[int] = []
    for step in range(k):
        gain = relevance_part - lam * _kl_on_support(ps, log_ps, (mass[None, :] + items) / (step + 1), alpha)
        gain[chosen] = -np.inf
        nxt = int(order[np.argmax(gain[order])])  # ties go to the more relevant item
        chosen.append(nxt)
        mass += items[nxt]
    return np.array(chosen, dtype=np.int64)
