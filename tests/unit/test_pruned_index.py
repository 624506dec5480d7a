"""The norm-pruned exact index (recsys/retrieval/pruned_index.py) against FAISS's flat inner-product scan."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from recsys.retrieval.ann import build_index, search
from recsys.retrieval.pruned_index import NormPrunedIndex


def _skewed(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Directions at random, norms long-tailed like learned factors (most short, a few very long)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * rng.lognormal(-3.0, 1.5, n).astype(np.float32)[:, None]


def _flat(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, k)


def _assert_same_top(pruned, vectors, queries, k):
    want_s, want_i = _flat(vectors, queries, k)
    got_s, got_i = pruned.search(queries, k)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-6)
    for g, w, ws in zip(got_i, want_i, want_s, strict=True):
        clear = ws > ws[-1] + 1e-5  # ranks above a possible tie at the k-th score: the same items
        assert set(g[clear]) == set(w[clear])


@pytest.mark.parametrize("k", [1, 10, 500])
def test_same_top_k_as_a_flat_scan_on_long_tailed_norms(k):
    v = _skewed(20_000)
    q = np.random.default_rng(1).standard_normal((30, 16)).astype(np.float32)
    index = NormPrunedIndex(16, block=512)
    index.add(v)
    _assert_same_top(index, v, q, k)


def test_long_tailed_norms_are_pruned_equal_norms_are_not():
    q = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    skewed = NormPrunedIndex(16, block=512)
    skewed.add(_skewed(20_000))
    assert skewed.rows_read(q, 100) < 20_000 * 0.25
    unit = _skewed(20_000)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    flat = NormPrunedIndex(16, block=512)
    flat.add(unit)
    assert flat.rows_read(q, 100) > 20_000 * 0.9  # equal norms: the bound never stops the scan


def test_queries_opposite_every_item_and_k_beyond_the_catalog():
    v = np.abs(_skewed(300))
    index = NormPrunedIndex(16, block=64)
    index.add(v)
    q = -np.ones((1, 16), np.float32)  # every score negative: nothing can be pruned, still exact
    _assert_same_top(index, v, q, 50)
    scores, ids = index.search(q, 400)
    assert (ids[0, :300] >= 0).all() and (ids[0, 300:] == -1).all() and np.isinf(scores[0, 300:]).all()
    assert sorted(ids[0, :300]) == list(range(300))


def test_ids_are_slots_in_add_order_across_tail_and_resort():
    v = _skewed(3000, seed=3)
    q = np.random.default_rng(4).standard_normal((10, 16)).astype(np.float32)
    index = NormPrunedIndex(16, block=256, tail_max=500)
    index.add(v[:2000])
    index.add(v[2000:2400])  # held in the tail, scanned in full
    assert len(index._state.tail) == 400
    _assert_same_top(index, v[:2400], q, 50)
    assert index.rows_read(q[0], 50) >= 400  # the tail is always read whole
    index.add(v[2400:])  # the tail would pass 500: everything re-sorted
    assert len(index._state.tail) == 0 and index.ntotal == 3000
    _assert_same_top(index, v, q, 50)


def test_through_the_ann_module_like_a_faiss_index():
    v = _skewed(5000, seed=5)
    index = build_index(v, "pruned")
    q = np.random.default_rng(6).standard_normal(16).astype(np.float32)
    ids, scores = search(index, q, 20)
    want_s, want_i = _flat(v, q[None], 20)
    np.testing.assert_allclose(scores, want_s[0], rtol=1e-5, atol=1e-6)
    assert index.ntotal == 5000 and ids.dtype == np.int64
