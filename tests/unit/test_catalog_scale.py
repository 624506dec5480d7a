"""Per-request retrieval work does not grow with the catalog (issue 13): on a large catalog a request allocates
nothing catalog-sized, and its answer is the one the small-catalog code paths give."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.retrieval import generator as generator_module
from recsys.retrieval.als import ALSParams
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.retrieval.sources import base as base_module
from recsys.retrieval.sources import content as content_module
from recsys.retrieval.sources.als import ALSSource
from recsys.retrieval.sources.base import Catalog, SourceRequest, accumulate, top_positive
from recsys.retrieval.sources.content import ContentSource, _ColdGroups
from recsys.retrieval.sources.i2i import ItemToItemSource
from recsys.retrieval.sources.popular import PopularSource
from recsys.retrieval.sources.segment import SegmentSource
from recsys.retrieval.sources.sequence import SequenceSource

N_ITEMS = 300_000  # above every large-catalog threshold (content grouping, local merge, sparse accumulation)
N_CATEGORIES = 12


def _neighbour_table(rng: np.random.Generator, n: int, per_item: int) -> sp.csr_matrix:
    """A random items x items table with `per_item` positive weights per row, popular items reached more."""
    cols = np.minimum(rng.zipf(1.3, n * per_item) - 1, n - 1)
    rows = np.repeat(np.arange(n), per_item)
    return sp.csr_matrix((rng.random(n * per_item).astype(np.float32) + 0.01, (rows, cols)), shape=(n, n))


@pytest.fixture(scope="module")
def large_catalog() -> RetrievalArtifacts:
    """Every history-driven source but ALS (whose cost is its ANN index's) over a 300,000-item catalog."""
    rng = np.random.default_rng(0)
    n = N_ITEMS
    cat_rows = np.concatenate([np.arange(n), np.arange(0, n, 3)])
    cat_cols = np.concatenate([rng.integers(0, N_CATEGORIES, n), rng.integers(0, N_CATEGORIES, len(range(0, n, 3)))])
    cats = sp.csr_matrix((np.ones(len(cat_rows), np.float32), (cat_rows, cat_cols)), shape=(n, N_CATEGORIES))
    cats.data[:] = 1.0
    catalog = Catalog(item_ids=np.array([f"i{i}" for i in range(n)]), item_factors=np.zeros((n, 4), np.float32),
                      item_categories=cats, category_names=[f"c{j}" for j in range(N_CATEGORIES)])
    counts = np.minimum(rng.zipf(1.5, n), 1000).astype(np.float32)
    seg_rows = np.repeat(np.arange(3), 300)
    seg_table = sp.csr_matrix((rng.random(900).astype(np.float32) + 0.01, (seg_rows, rng.choice(n, 900))),
                              shape=(3, n))
    sources = [ItemToItemSource(catalog, _neighbour_table(rng, n, 20), "cosine"),
               PopularSource(catalog, (counts / counts.max()).astype(np.float32)),
               SegmentSource(catalog, ["age=18-24", "country=US", "gender=F"], seg_table),
               ContentSource(catalog, counts < 3),
               SequenceSource(catalog, _neighbour_table(rng, n, 10))]
    return RetrievalArtifacts(catalog=catalog, sources=sources)


def _requests(n_users: int) -> list[tuple[np.ndarray, dict[str, str], np.ndarray]]:
    rng = np.random.default_rng(1)
    attrs = [{"age": "18-24", "country": "US"}, {"gender": "F"}, {}, {"country": "GB"}]
    return [(rng.choice(N_ITEMS, int(rng.integers(0, 80)), replace=False), attrs[u % 4],
             rng.choice(N_ITEMS, 5 * (u % 2), replace=False)) for u in range(n_users)]


def test_a_request_on_a_large_catalog_allocates_nothing_catalog_sized(large_catalog):
    gen = CandidateGenerator(large_catalog, GeneratorConfig(n=300))
    assert gen.source("content").groups is not None  # most items are cold: they are ranked in groups
    for history, attrs, exclude in _requests(40):
        gen.retrieve(history, attrs, 300, exclude)  # warm (scipy's first calls allocate lookup tables)
        tracemalloc.start()
        try:
            c = gen.retrieve(history, attrs, 300, exclude)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # one byte per catalog item is less than a boolean mask over the catalog
        assert peak < N_ITEMS, f"a request allocated {peak:,} bytes on a {N_ITEMS:,}-item catalog"
        assert len(c.items) == 300 and len(set(c.items.tolist())) == 300
        assert not set(c.items.tolist()) & (set(history.tolist()) | set(exclude.tolist()))


def test_large_catalog_paths_give_the_small_catalog_answer(large_catalog, monkeypatch):
    """The renumbered merge and the sorted accumulation are the dense code with less memory: same candidates,
    same scores, same source masks (content grouping aside: it only orders ties, tested below)."""
    gen = CandidateGenerator(large_catalog, GeneratorConfig(n=300))
    requests = _requests(60)
    large = [gen.retrieve(h, a, 300, e) for h, a, e in requests]
    monkeypatch.setattr(generator_module, "LOCAL_MERGE_RATIO", 10**9)
    monkeypatch.setattr(base_module, "SPARSE_ACCUMULATE_RATIO", 10**9)
    small = [gen.retrieve(h, a, 300, e) for h, a, e in requests]
    for x, y in zip(large, small, strict=True):
        np.testing.assert_array_equal(x.items, y.items)
        np.testing.assert_array_equal(x.sources, y.sources)
        np.testing.assert_array_equal(x.scores, y.scores)


def test_sorted_accumulation_equals_the_dense_bincount():
    rng = np.random.default_rng(2)
    table = _neighbour_table(rng, 5000, 30)
    table.data[::7] *= -1  # EASE tables hold negative weights too
    for size in (1, 10, 200):
        recent = rng.choice(5000, size, replace=False)
        rows = table[recent]
        dense = np.bincount(rows.indices, weights=rows.data, minlength=5000)
        items, weights = accumulate(table, recent, 10**9)  # far more items than entries: the sorted path
        np.testing.assert_array_equal(items, np.flatnonzero(dense))
        np.testing.assert_array_equal(weights, dense[items].astype(np.float32))


def test_grouped_cold_items_rank_like_every_cold_item(large_catalog):
    """The same scores in the same order as scoring every cold item; ties by catalog row."""
    src = next(s for s in large_catalog.sources if s.name == "content")
    src.start("exact")
    groups = _ColdGroups.of(src.cold_items, src.cold_categories)
    rng = np.random.default_rng(3)
    cats = large_catalog.catalog.item_categories
    for depth in (1, 50, 1200):
        profile = rng.random(N_CATEGORIES).astype(np.float32) * (rng.random(N_CATEGORIES) < 0.5)
        every = src.cold_items[top_positive(src.cold_categories @ profile, depth)]
        top = groups.top(profile, depth)
        np.testing.assert_array_equal(cats[top] @ profile, cats[every] @ profile)
        s = cats[top] @ profile
        ties = s[1:] == s[:-1]
        assert (top[1:][ties] > top[:-1][ties]).all()
    assert len(src.cold_items) > content_module.GROUPED_ABOVE


def test_prefetched_als_searches_answer_as_single_searches():
    """A batch of users searched at once (training on a large catalog) proposes what each search alone would,
    up to the order of near-equal scores."""
    rng = np.random.default_rng(4)
    n = 60_000
    factors = rng.normal(size=(n, 8)).astype(np.float32)
    catalog = Catalog(item_ids=np.array([f"i{i}" for i in range(n)]), item_factors=factors,
                      item_categories=sp.csr_matrix((n, 1), dtype=np.float32), category_names=["c"])
    src = ALSSource(catalog, ALSParams(factors=8))
    src.start("exact")
    histories = [rng.choice(n, int(rng.integers(1, 40)), replace=False).astype(np.int64) for _ in range(50)]
    alone = [src.propose(SourceRequest(h, h, {}, 400)).ranked for h in histories]
    src.prefetch(histories[:30], 400)
    src.prefetch(histories[20:], 400)  # the first batch's users stay held (up to PREFETCH_KEEP)
    assert len(src._prefetched) == 50
    batched = [src.propose(SourceRequest(h, h, {}, 400)).ranked for h in histories]
    for a, b in zip(alone, batched, strict=True):
        assert len(a) == len(b) == 400
        assert len(set(a.tolist()) ^ set(b.tolist())) <= 2 and (a == b).mean() > 0.95
    deeper = src.propose(SourceRequest(histories[0], histories[0], {}, 2000)).ranked  # deeper than the batch
    assert len(deeper) == 2000 and set(alone[0].tolist()) <= set(deeper.tolist())
