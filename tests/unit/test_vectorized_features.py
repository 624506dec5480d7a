"""The vectorized feature assembly gives the same values, to the bit, as the per-item reference code it
replaced (kept here as the reference), on generated requests with the awkward cases: items without
categories, unknown items, history categories no candidate has, empty requests."""

from collections import Counter

import numpy as np
import pytest

from recsys.pipeline import stages
from recsys.pipeline.model import ItemEmbeddings
from recsys.pipeline.types import CandidateList, ItemBatch, ItemView, UserView
from recsys.ranking.features import category_affinity, nan_max_mean_std, to_matrix


def _reference_affinity(history_categories, item_categories):
    counts = Counter(c for cats in history_categories for c in cats)
    total = max(1, len(history_categories))
    n = len(item_categories)
    aff_sum, aff_max = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    for i, cats in enumerate(item_categories):
        if cats:
            shares = [counts.get(c, 0) / total for c in cats]
            aff_sum[i] = sum(shares) / len(cats)
            aff_max[i] = max(shares)
    return aff_sum, aff_max


def _reference_lookup(emb: ItemEmbeddings, item_ids):
    out = np.zeros((len(item_ids), emb.unit.shape[1]), dtype=np.float32)
    for i, x in enumerate(item_ids):
        r = emb.item_row.get(x)
        if r is not None:
            out[i] = emb.unit[r]
    return out


def _categories(rng, n, vocab=12):
    return [[f"c{j}" for j in rng.choice(vocab, size=rng.integers(0, 5), replace=False)] for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_category_affinity_matches_the_per_item_reference(seed):
    rng = np.random.default_rng(seed)
    history = _categories(rng, int(rng.integers(0, 25)), vocab=20)
    items = _categories(rng, int(rng.integers(0, 400)))
    got, want = category_affinity(history, items), _reference_affinity(history, items)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and np.array_equal(g, w)
    assert [a.size for a in category_affinity([], [])] == [0, 0]


def test_embedding_lookup_matches_the_per_row_reference():
    rng = np.random.default_rng(0)
    emb = ItemEmbeddings.from_factors(np.array([f"i{j}" for j in range(50)]), rng.normal(size=(50, 8)))
    ids = [f"i{j}" for j in rng.integers(0, 70, size=300)]  # ids from i50 on are unknown: zero rows
    assert np.array_equal(emb.lookup(ids), _reference_lookup(emb, ids))
    assert emb.lookup([]).shape == (0, 8)
    empty = ItemEmbeddings.from_factors(np.array([], dtype=str), np.zeros((0, 8)))
    assert np.array_equal(empty.lookup(["x", "y"]), np.zeros((2, 8), np.float32))


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("missing", [False, True])
def test_feature_columns_match_the_reference_row_copy(missing, batch):
    """Item values are read as columns from an ItemBatch (what the ranker fetches), stacked at once from a
    list when every item is found, row by row otherwise: all give the matrix the old per-row copy gave (NaN
    rows for unknown items, whatever values the answer held for them)."""
    rng = np.random.default_rng(1)
    n, names = 200, ["item_popularity_rel", "item_n_interactions", "item_mean_ts"]
    values = rng.random((n, len(names))).astype(np.float32)
    items = [ItemView(f"i{j}", not (missing and j % 7 == 0), values[j], cats, "")
             for j, cats in enumerate(_categories(rng, n))]
    if batch:
        items = ItemBatch([it.item_id for it in items], np.array([it.found for it in items]), values,
                          [it.categories for it in items], ["" for _ in items])
        assert [it.found for it in items[:10]] == [not (missing and j % 7 == 0) for j in range(10)]
    cands = CandidateList(item_ids=[f"i{j}" for j in range(n)], score_names=["als_score"],
                          scores=rng.random((n, 1)).astype(np.float32), source_masks=np.ones(n, np.uint64),
                          source_vocab=["als"])
    user = UserView("u", True, ["user_mean_ts"], np.array([5.0], np.float32), ["i1", "i2"], {})
    emb = ItemEmbeddings.from_factors(np.array(cands.item_ids), rng.normal(size=(n, 4)))
    cols = stages.feature_columns(emb, user, cands, names, items, items[:2])
    ref = np.full((n, len(names)), np.nan, np.float32)
    for i, it in enumerate(items):
        if it.found:
            ref[i] = values[i]
    for j, name in enumerate(names):
        np.testing.assert_array_equal(cols[name], ref[:, j])
    want_sum, want_max = _reference_affinity([it.categories for it in items[:2]], [it.categories for it in items])
    assert np.array_equal(cols["category_affinity"], want_sum)
    assert np.array_equal(cols["category_affinity_max"], want_max)


def test_item_batch_views_and_slices_and_refuses_unequal_columns():
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    batch = ItemBatch(["a", "b", "c"], np.array([True, False, True]), values, [["x"], [], ["y", "z"]], ["A", "", "C"])
    assert [v.item_id for v in batch] == ["a", "b", "c"] and len(batch[1:]) == 2
    view = batch[-1]
    assert view.found and view.title == "C" and view.categories == ["y", "z"] and view.values.tolist() == [4.0, 5.0]
    assert isinstance(batch[:2], ItemBatch) and batch[:2].titles == ["A", ""]
    with pytest.raises(ValueError, match="unequal lengths"):
        ItemBatch(["a"], np.array([True, True]), values[:2], [[], []], ["", ""])


def test_to_matrix_matches_the_column_by_column_reference():
    rng = np.random.default_rng(4)
    names = [f"f{j}" for j in range(12)]
    cols = {f"f{j}": rng.random(50).astype(np.float32 if j % 3 else np.float64) for j in range(0, 12, 2)}
    ref = np.full((50, len(names)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in cols:
            ref[:, j] = cols[name]
    got = to_matrix(cols, names, 50)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)


def test_nan_stats_give_numpys_bits():
    """The relative-score statistics equal np.nanmax, np.nanmean and np.nanstd to the bit (and type) on
    columns with NaNs, infinities, constant values and scales from 1e-4 to 1e7."""
    rng = np.random.default_rng(0)
    checked = 0
    for t in range(3000):
        n = int(rng.integers(1, 700))
        scale = 10.0 ** rng.uniform(-4, 7)
        col = (rng.normal(size=n) * scale + rng.normal() * scale).astype(np.float32)
        kind = t % 5
        if kind == 1:
            col[rng.random(n) < rng.uniform(0, 0.99)] = np.nan
        elif kind == 2:
            col[:] = np.float32(rng.normal())
        elif kind == 3:
            col[rng.random(n) < 0.05] = np.inf
        elif kind == 4:
            col = rng.exponential(size=n).astype(np.float32)
            col[rng.random(n) < 0.3] = np.nan
        if not np.isfinite(col).any():
            continue
        with np.errstate(all="ignore"):
            want = (np.nanmax(col), np.nanmean(col), np.nanstd(col))
            got = nan_max_mean_std(col)
        for g, w in zip(got, want, strict=True):
            assert type(g) is type(w)
            assert np.array_equal(np.asarray(g), np.asarray(w), equal_nan=True), (t, g, w)
            assert np.isnan(w) or np.asarray(g).view(np.int32) == np.asarray(w).view(np.int32)
        checked += 1
    assert checked > 2500
