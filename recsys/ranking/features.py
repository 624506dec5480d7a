"""Assembles the ranker's feature matrix for one request from what the ranker fetched.

The same function builds training rows and serving rows, so the model never sees a feature computed
two different ways. Columns are addressed by name: a model picks the ones it was trained on, and a
feature the store does not (yet) provide is NaN, which LightGBM treats as missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import chain

import numpy as np


@dataclass
class RankingInputs:
    user_feature_names: list[str]
    user_values: np.ndarray            # float32 [Fu]
    history_categories: list[list[str]]  # categories of the user's recent history items
    history_embedding: np.ndarray | None  # mean unit embedding of the recent history, or None
    history_len: int
    score_names: list[str]
    relative_score_names: list[str]    # score columns the sources declare scale-dependent
    candidate_scores: np.ndarray       # float32 [n, S] from candidate retrieval
    item_feature_names: list[str]
    item_values: np.ndarray            # float32 [n, Fi] from the feature store
    item_categories: list[list[str]]
    item_embeddings: np.ndarray | None  # unit embeddings [n, d], or None


def assemble(inp: RankingInputs) -> dict[str, np.ndarray]:
    """Named feature columns, each of length n (the number of candidates)."""
    n = inp.candidate_scores.shape[0]
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(inp.score_names):
        cols[name] = inp.candidate_scores[:, j]
    # Scores relative to this request's candidates: stable when the retrieval models are refit on more
    # data than the ranker was trained with (their raw score scales drift, their orderings do not).
    for name in inp.relative_score_names:
        col = cols.get(name)
        if col is not None and n and np.isfinite(col).any():
            top, mu, sd = nan_max_mean_std(col)
            cols[f"{name}_of_max"] = col / top if top > 0 else np.full(n, np.nan, np.float32)
            cols[f"{name}_z"] = (col - mu) / sd if sd > 0 else np.zeros(n, np.float32)
    for j, name in enumerate(inp.item_feature_names):
        cols[name] = inp.item_values[:, j]
    for j, name in enumerate(inp.user_feature_names):
        cols[name] = np.full(n, inp.user_values[j], dtype=np.float32)
    cols["history_len"] = np.full(n, inp.history_len, dtype=np.float32)

    # How much of the user's recent history shares each candidate's categories.
    cols["category_affinity"], cols["category_affinity_max"] = category_affinity(inp.history_categories,
                                                                                inp.item_categories)
    cols["item_n_categories"] = np.array([len(c) for c in inp.item_categories], dtype=np.float32)

    # When the user was active versus when the item was consumed: the time features only count relative
    # to each other (days).
    def named(names: list[str], values: np.ndarray, name: str):
        """A timestamp column, NaN where it is unset (users created by events, unknown users)."""
        if name not in names:
            return None
        col = np.asarray(values[..., names.index(name)], dtype=np.float64)
        return np.where(col > 0, col, np.nan)

    u_mean = named(inp.user_feature_names, inp.user_values, "user_mean_ts")
    u_last = named(inp.user_feature_names, inp.user_values, "user_last_ts")
    i_mean = named(inp.item_feature_names, inp.item_values, "item_mean_ts")
    i_first = named(inp.item_feature_names, inp.item_values, "item_first_ts")
    if u_mean is not None and i_mean is not None:
        cols["time_gap_days"] = (np.abs(i_mean - u_mean) / 86_400.0).astype(np.float32)
    if u_last is not None and i_first is not None:
        cols["item_first_after_user_last_days"] = ((i_first - u_last) / 86_400.0).astype(np.float32)

    if inp.history_embedding is not None and inp.item_embeddings is not None:
        cols["embedding_similarity"] = (inp.item_embeddings @ inp.history_embedding).astype(np.float32)
    else:
        cols["embedding_similarity"] = np.full(n, np.nan, dtype=np.float32)
    return cols


def nan_max_mean_std(col: np.ndarray) -> tuple[np.floating, np.floating, np.floating]:
    """np.nanmax, np.nanmean and np.nanstd of a column with at least one non-NaN value: for a float32 column
    the same operations in the same order as numpy's nan functions (so the same bits; a test compares them
    on thousands of columns), without their per-call overhead (a third of featurize's time, 5 columns)."""
    if col.dtype != np.float32 or col.ndim != 1:
        return np.nanmax(col), np.nanmean(col), np.nanstd(col)
    mask = np.isnan(col)
    arr = col.copy()
    np.copyto(arr, 0, where=mask)
    cnt = np.intp(np.add.reduce(~mask, dtype=np.intp))
    mean = np.float32(np.add.reduce(arr) / cnt)  # numpy: a.dtype.type(a / b), in float64
    np.subtract(arr, mean, out=arr)
    np.copyto(arr, 0, where=mask)
    var = np.float32(np.add.reduce(np.multiply(arr, arr, out=arr)) / cnt)
    return np.fmax.reduce(col), mean, np.float32(np.sqrt(var))


def category_affinity(history_categories: list[list[str]],
                      item_categories: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate, the mean and the max over its categories of the share of the recent history in that
    category (0 without categories). One pass over all candidates' categories at once; the sums run in
    the same order as a per-item `sum`, so the values are the same to the bit."""
    n = len(item_categories)
    counts = Counter(c for cats in history_categories for c in cats)
    total = max(1, len(history_categories))
    n_cats = np.fromiter(map(len, item_categories), dtype=np.int64, count=n)
    aff_sum = np.zeros(n, dtype=np.float32)
    aff_max = np.zeros(n, dtype=np.float32)
    flat = list(chain.from_iterable(item_categories))
    if not flat:
        return aff_sum, aff_max
    get = counts.get
    shares = np.fromiter((get(c, 0) for c in flat), dtype=np.float64, count=len(flat)) / total
    has = n_cats > 0
    owner = np.repeat(np.arange(n), n_cats)
    aff_sum[has] = np.bincount(owner, weights=shares, minlength=n)[has] / n_cats[has]
    starts = (np.cumsum(n_cats) - n_cats)[has]
    aff_max[has] = np.maximum.reduceat(shares, starts)
    return aff_sum, aff_max


def to_matrix(cols: dict[str, np.ndarray], feature_names: list[str], n: int) -> np.ndarray:
    """The model's input matrix: its features in its order, NaN for any the request lacks."""
    # filled a feature at a time into contiguous rows of the transpose (a strided column write per feature
    # cost more than the one copy back to row-major order)
    out = np.full((len(feature_names), n), np.nan, dtype=np.float32)
    for j, name in enumerate(feature_names):
        col = cols.get(name)
        if col is not None:
            out[j] = col
    return np.ascontiguousarray(out.T)
