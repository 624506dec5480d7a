"""Splits: partition properties, per-group counts, determinism, chronology, Recommenders compatibility."""

import time

import numpy as np
import pandas as pd
import pytest

from recsys.data import generate, holdout_by_user, stratified_split, temporal_split


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    df = generate(n_users=400, n_items=1000, n_interactions=25_000, seed=3).interactions
    df.index = df.index * 3 + 7  # a non-default index must be preserved
    return df


def _tiny() -> pd.DataFrame:
    """Users with 1..8 interactions, some timestamp ties."""
    rows = []
    for u in range(1, 9):
        for k in range(u):
            rows.append((f"u{u}", f"i{(u * 7 + k) % 13}", 1000 + 10 * (k // 2)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _assert_partition(df, a, b):
    assert a.index.intersection(b.index).empty
    pd.testing.assert_frame_equal(pd.concat([a, b]).sort_index(), df.sort_index())
    assert a.index.is_monotonic_increasing and b.index.is_monotonic_increasing  # original row order kept


def _ms_recommenders_counts(df, ratio, col, seed):
    """Per-group train sizes from Microsoft Recommenders' loop: shuffle, then np.split at round(ratio*n)."""
    out = {}
    for key, group in df.groupby(col):
        shuffled = group.sample(frac=1, random_state=seed)
        out[key] = len(np.split(shuffled, [round(ratio * len(shuffled))])[0])
    return pd.Series(out)


@pytest.mark.parametrize("by", ["user", "item"])
@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.8])
def test_stratified_split(log, by, ratio):
    train, test = stratified_split(log, ratio=ratio, by=by, seed=42)
    _assert_partition(log, train, test)
    col = "user_id" if by == "user" else "item_id"
    n = log.groupby(col).size()
    n_train = train.groupby(col).size().reindex(n.index, fill_value=0)
    assert (np.abs(n_train - ratio * n) <= 1).all()
    assert (n_train == np.rint(ratio * n)).all()
    again_train, _ = stratified_split(log, ratio=ratio, by=by, seed=42)
    pd.testing.assert_frame_equal(again_train, train)
    other_train, _ = stratified_split(log, ratio=ratio, by=by, seed=43)
    assert not other_train.index.equals(train.index)


def test_stratified_split_matches_ms_recommenders_counts():
    df = _tiny()
    train, _ = stratified_split(df, ratio=0.75, by="user", seed=42)
    ours = train.groupby("user_id").size().reindex(sorted(df["user_id"].unique()), fill_value=0)
    ms = _ms_recommenders_counts(df, 0.75, "user_id", 42)
    pd.testing.assert_series_equal(ours, ms, check_names=False)
    assert ms["u2"] == 2 and ms["u6"] == 4  # round-half-to-even: 1.5 -> 2, 4.5 -> 4


def test_stratified_split_min_rating_and_errors():
    df = _tiny()
    train, test = stratified_split(df, ratio=0.5, min_rating=3)
    assert set(pd.concat([train, test])["user_id"]) == {f"u{u}" for u in range(3, 9)}
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(df, ratio=1.0)
    with pytest.raises(ValueError, match="by"):
        stratified_split(df, by="session")
    with pytest.raises(KeyError, match="user"):
        stratified_split(df.rename(columns={"user_id": "uid"}))


def test_temporal_split(log):
    train, test = temporal_split(log, test_fraction=0.2)
    _assert_partition(log, train, test)
    last_train = train.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    assert (last_train.reindex(first_test.index) <= first_test).all()
    n = log.groupby("user_id").size()
    n_test = test.groupby("user_id").size().reindex(n.index, fill_value=0)
    expected = np.clip(np.maximum(np.rint(0.2 * n), 1), 0, n - 1)
    assert (n_test == expected).all()
    assert abs(len(test) / len(log) - 0.2) < 0.02


def test_temporal_split_small_users_and_ties():
    df = _tiny()
    train, test = temporal_split(df, test_fraction=0.2)
    assert "u1" not in set(test["user_id"])  # a single interaction stays in train
    sizes = test.groupby("user_id").size()
    assert sizes.to_dict() == {"u2": 1, "u3": 1, "u4": 1, "u5": 1, "u6": 1, "u7": 1, "u8": 2}
    # ties broken by row order: the later row of a tied pair goes to test
    assert test[test["user_id"] == "u2"].index.tolist() == [2]
    assert set(train["user_id"]) == {f"u{u}" for u in range(1, 9)}


def test_holdout_by_user(log):
    rest, held = holdout_by_user(log, 0.1, seed=7)
    _assert_partition(log, rest, held)
    n = log.groupby("user_id").size()
    n_held = held.groupby("user_id").size().reindex(n.index, fill_value=0)
    assert (n_held == np.clip(np.maximum(np.rint(0.1 * n), 1), 0, n - 1)).all()
    assert set(rest["user_id"]) == set(log["user_id"])
    pd.testing.assert_frame_equal(holdout_by_user(log, 0.1, seed=7)[1], held)
    assert not holdout_by_user(log, 0.1, seed=8)[1].index.equals(held.index)
    # random, not chronological: held-out rows are not all the latest ones
    first_held = held.groupby("user_id")["timestamp"].min()
    last_rest = rest.groupby("user_id")["timestamp"].max().reindex(first_held.index)
    assert (first_held < last_rest).mean() > 0.5


def test_splits_are_vectorized_fast():
    n = 1_000_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user_id": rng.integers(0, 100_000, n), "item_id": rng.integers(0, 50_000, n),
                       "timestamp": rng.integers(0, 10**9, n)})
    t = time.perf_counter()
    stratified_split(df)
    temporal_split(df)
    holdout_by_user(df, 0.1, 1)
    assert time.perf_counter() - t < 10  # about 1 s in total
