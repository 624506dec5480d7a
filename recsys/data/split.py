"""Train/test splits for evaluation and training, vectorized (no Python loop over groups), seeded.

Every split returns (first, second) as boolean-mask views of the input in its original row order with the
original index kept, so pd.concat of the two parts, sorted by index, is exactly the input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _group_rank(codes: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 0-based rank within its group when ordered by keys (first key most significant),
    and its group's size."""
    order = np.lexsort(tuple(reversed(keys)) + (codes,))
    size = np.bincount(codes)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - start[codes[order]]
    return rank, size[codes]


def _codes(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        raise KeyError(f"column {col!r} not in the data (columns: {', '.join(map(str, df.columns))})")
    return pd.factorize(df[col], use_na_sentinel=False)[0].astype(np.int64)


def _n_held(size: np.ndarray, fraction: float) -> np.ndarray:
    """Rows held out per group: round(fraction * n), at least one when fraction > 0, but never the whole
    group, so single-interaction users stay fully on the training side."""
    n = np.rint(fraction * size).astype(np.int64)
    if fraction > 0:
        n = np.maximum(n, 1)
    return np.clip(n, 0, np.maximum(size - 1, 0))


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def stratified_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    by: str = "user",
    seed: int = 42,
    *,
    min_rating: int = 1,
    col_user: str = "user_id",
    col_item: str = "item_id",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Microsoft Recommenders' python_stratified_split protocol: (train, test).

    Groups by user (or item) after dropping groups with fewer than min_rating rows, shuffles each group with
    the seed and puts the first round(ratio * n) rows in train (Python/numpy round-half-to-even, as there;
    so a 2-row group with ratio 0.75 is all train). Every group is split, so users appear in both sides when
    big enough. Row membership differs from Recommenders' (which reshuffles each group with the same seed)
    but the per-group counts are identical.
    """
    _check_fraction("ratio", ratio)
    if by not in ("user", "item"):
        raise ValueError(f"by must be 'user' or 'item', got {by!r}")
    col = col_user if by == "user" else col_item
    codes = _codes(df, col)
    if min_rating > 1:
        keep = np.bincount(codes)[codes] >= min_rating
        df, codes = df[keep], pd.factorize(codes[keep])[0].astype(np.int64)
    key = np.random.default_rng(seed).random(len(df))
    rank, size = _group_rank(codes, key)
    train = rank < np.rint(ratio * size)
    return df[train], df[~train]


class NoTimeError(ValueError):
    """A time-based operation was asked of data whose interactions carry no time order."""


def has_time_order(user_codes: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Per interaction: does its user have at least two distinct timestamps? Where not, "latest" would
    only mean "later in the file" (Last.fm has no time; an importer's row order is not behaviour)."""
    if not len(user_codes):
        return np.zeros(0, dtype=bool)
    g = pd.Series(np.asarray(timestamps)).groupby(np.asarray(user_codes))
    varies = g.transform("max") != g.transform("min")
    return varies.to_numpy(dtype=bool, na_value=False)


def temporal_split(
    df: pd.DataFrame,
    test_fraction: float = 0.2,
    *,
    col_user: str = "user_id",
    col_time: str = "timestamp",
    name: str = "the data",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user chronological split: (train, test) with each user's latest interactions in test.

    A user with n >= 2 interactions gets max(1, round(test_fraction * n)) (capped at n - 1) test rows, so
    every such user is evaluable and keeps training history; single-interaction users stay in train.
    Timestamp ties are broken by row order (a later row counts as later). Raises NoTimeError (naming the
    dataset `name`) when a timestamp is missing or no user has two distinct times: the split would then
    be by row order, quietly.
    """
    _check_fraction("test_fraction", test_fraction)
    codes = _codes(df, col_user)
    missing = int(df[col_time].isna().sum())
    if missing:
        raise NoTimeError(f"{name}: {missing} of {len(df)} interactions have no timestamp; a temporal split "
                          "needs time (use a random protocol, e.g. --protocol msr)")
    ts = df[col_time].to_numpy()
    if len(df) and not has_time_order(codes, ts).any():
        raise NoTimeError(f"{name}: no user's interactions differ in time (every timestamp equal or absent), "
                          "so a temporal split would follow row order; use a random protocol, e.g. --protocol msr")
    rank, size = _group_rank(codes, ts, np.arange(len(df)))
    test = (size - 1 - rank) < _n_held(size, test_fraction)
    return df[~test], df[test]


def holdout_by_user(
    df: pd.DataFrame, fraction: float = 0.1, seed: int = 42, *, col_user: str = "user_id"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random holdout, e.g. to carve validation out of train: (rest, holdout).

    Same per-user counts as temporal_split (at least one held-out row per user with >= 2 rows, never all).
    """
    _check_fraction("fraction", fraction)
    codes = _codes(df, col_user)
    key = np.random.default_rng(seed).random(len(df))
    rank, size = _group_rank(codes, key)
    held = rank < _n_held(size, fraction)
    return df[~held], df[held]
