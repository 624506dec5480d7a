"""Items added at run time: the content -> factor map, catalog growth in every source, concurrency, legacy bundles."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.bundle import read_metadata
from recsys.pipeline.model import ItemEmbeddings
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.content_map import (
    CategoryMeans,
    ContentMap,
    category_rows,
    content_features,
    fit_content_map,
)
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.retrieval.growth import NewItem
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def art(small_bundle: Path) -> RetrievalArtifacts:
    return RetrievalArtifacts.load(small_bundle / "retrieval")


def members(art: RetrievalArtifacts, category: str) -> np.ndarray:
    j = art.catalog.category_names.index(category)
    return np.flatnonzero(art.catalog.item_categories[:, j].toarray().ravel())


def per_item_lengths(gen: CandidateGenerator) -> dict[str, int]:
    """The length of every per-item table of the generator's current snapshot (taken once)."""
    live = gen._live
    c = live.art.catalog
    out = {"ids": len(c.item_ids), "factors": len(c.item_factors), "categories": c.item_categories.shape[0],
           "snapshot": live.n_items}
    for s in live.sources:
        if s.name == "als":
            out["fold_in"] = len(s.fold_in.item_factors)
            # An ungrown copy sees the slots below its catalog's size: the shared index may already hold
            # vectors a concurrent add_items appended for the next snapshot.
            out["als_slots"] = (int((s.item_of_slot >= 0).sum()) if s.item_of_slot is not None
                                else min(s.index.ntotal, s.catalog.n_items))
        elif s.name in ("i2i", "seq"):
            out[f"{s.name}_rows"], out[f"{s.name}_cols"] = s.table.shape
        elif s.name == "popular":
            out["popularity"], out["pop_order"] = len(s.popularity), len(s.order)
        elif s.name == "segment":
            out["segment_cols"] = s.table.shape[1]
        elif s.name == "content":
            out["cold"] = len(s.cold)
    return out


def test_content_map_recovers_a_linear_relationship():
    rng = np.random.default_rng(0)
    n, names = 400, [f"c{j}" for j in range(6)]
    cats = sp.csr_matrix((rng.random((n, 6)) < 0.3).astype(np.float32))
    titles = [" ".join(rng.choice(WORDS, size=rng.integers(1, 5))) for _ in range(n)]
    x = content_features(cats, titles, 1.0)
    w = rng.normal(size=(x.shape[1], 8))
    factors = (x @ w + 0.5).astype(np.float32)
    catalog = Catalog(np.array([f"i{i}" for i in range(n)]), factors, cats, names)
    cmap = fit_content_map(catalog, titles, np.full(n, 10), min_count=5)
    assert cmap is not None and cmap.info["heldout_r2"] > 0.99 and cmap.info["heldout_cosine"] > 0.99
    new_cats = [["c1", "c4", "unknown"], ["c0"]]
    new_titles = ["W3 w7, w11!", "w20"]
    truth = content_features(category_rows(new_cats, names), new_titles, 1.0) @ w + 0.5
    assert np.allclose(cmap.vectors(category_rows(new_cats, names), new_titles), truth, atol=0.05 * np.abs(truth).max())


def test_too_few_items_with_factors_give_no_map():
    cats = sp.csr_matrix(np.eye(4, dtype=np.float32))
    catalog = Catalog(np.array(list("abcd")), np.ones((4, 2), np.float32), cats, list("wxyz"))
    assert fit_content_map(catalog, ["t"] * 4, np.full(4, 100), min_count=5) is None


def test_the_bundle_ships_the_map_and_records_its_fit(small_bundle: Path, art):
    assert isinstance(art.content_map, ContentMap)
    assert art.content_map.category_names == art.catalog.category_names
    metrics = read_metadata(small_bundle).metrics
    assert 0.0 < metrics["content_map_heldout_r2"] <= 1.0 and "content_map_heldout_cosine" in metrics
    assert "content_map" in json.loads((small_bundle / "retrieval" / "retrieval.json").read_text())


def test_add_items_grows_every_source_consistently(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=100))
    n0, cat = gen.n_items, art.catalog.category_names[0]
    idx = gen.add_items([NewItem("new-a", "Item 9000 (x)", [cat]), NewItem("new-b", "", ["no-such-category"])])
    assert idx == [n0, n0 + 1]
    assert set(per_item_lengths(gen).values()) == {n0 + 2}
    c = gen.art.catalog
    assert c.added == 2 and c.n_trained == n0 and c.item_ids[-2:].tolist() == ["new-a", "new-b"]
    assert c.item_categories[n0 + 1].nnz == 0  # unknown category names are ignored
    assert gen.source("content").cold[-2:].all() and gen.source("popular").popularity[-2:].tolist() == [0, 0]
    assert gen.source("als").index.ntotal == n0 + 2
    assert art.catalog.n_items == n0  # the bundle's artifacts are never modified
    # History, exclusions and seen-item filtering take the new ids.
    ids, cands = gen.retrieve_ids(["new-a", *art.item_ids[members(art, cat)[:10]].tolist()], ["new-b"], 100, {},
                                  False)
    assert "new-a" not in ids and "new-b" not in ids and len(ids) == len(set(ids)) == 100
    assert cands.scores.shape == (100, len(gen.score_names))
    ids, _ = gen.retrieve_ids(["new-a"], [], 50, {}, True)  # a history of only a new item folds in
    assert "new-a" in ids


def test_a_new_item_is_proposed_by_als_and_content_to_users_of_its_categories(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=100))
    names = art.catalog.category_names
    for a, b in ((names[0], names[1]), (names[2], names[3])):
        [idx] = gen.add_items([NewItem(f"new-{a}", f"Item 9999 ({a})", [a])])
        matching, other = members(art, a)[:15], members(art, b)[:15]
        other = other[~np.isin(other, members(art, a))]
        ranks = {}
        for who, hist in (("matching", matching), ("other", other)):
            req = SourceRequest(history=hist, recent=hist, attributes={}, depth=100)
            for src in ("als", "content"):
                ranked = gen.source(src).propose(req).ranked.tolist()
                ranks[who, src] = ranked.index(idx) if idx in ranked else 10**6
        assert ranks["matching", "als"] < 60 and ranks["matching", "als"] < ranks["other", "als"]
        assert ranks["matching", "content"] < 60 and ranks["matching", "content"] < ranks["other", "content"]
        ids, c = gen.retrieve_ids(art.item_ids[matching].tolist(), [], 250, {}, False)
        assert f"new-{a}" in ids
        sources = c.source_names_of(ids.index(f"new-{a}"))
        assert {"als", "content"} & set(sources)
        row = c.scores[ids.index(f"new-{a}")]
        assert np.isnan(row[c.score_names.index("i2i_score")])  # no co-occurrence data: missing, not 0


def test_upserts_of_known_items(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=50))
    names = art.catalog.category_names
    [x] = gen.add_items([NewItem("new-x", "Item 1", [names[0]])])
    vec = gen.art.item_factors[x].copy()
    live = gen._live
    assert gen.add_items([NewItem("new-x", "Item 1", [names[0]])]) == [x] and gen._live is live  # unchanged: no-op
    trained = 3
    factors = art.item_factors[trained].copy()
    assert gen.add_items([NewItem(str(art.item_ids[trained]), "whatever", [names[1]]),
                          NewItem("new-x", "Item 1", [names[1], names[2]])]) == [trained, x]
    c = gen.art.catalog
    assert c.n_items == art.catalog.n_items + 1  # nothing appended
    assert np.array_equal(c.item_factors[trained], factors)  # a trained item keeps its learned factors
    assert c.item_categories[trained].indices.tolist() == [1]
    assert not np.array_equal(c.item_factors[x], vec)  # a run-time item is re-placed ...
    als = gen.source("als")
    assert als.retired == 1 and als.index.ntotal == c.n_items + 1 and (als.item_of_slot == x).sum() == 1
    assert np.allclose(als.fold_in.base, CandidateGenerator(gen.art).source("als").fold_in.base, atol=1e-3)
    # ... and a within-batch repeat keeps the last upsert.
    gen.add_items([NewItem("new-y", "", [names[0]]), NewItem("new-y", "", [names[3]])])
    assert gen.art.catalog.item_categories[gen.n_items - 1].indices.tolist() == [3]


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "pruned"])
def test_add_items_works_on_every_index_kind(art, kind):
    gen = CandidateGenerator(art, GeneratorConfig(n=100, index=kind))
    cat = art.catalog.category_names[0]
    gen.add_items([NewItem(f"new-{i}", f"Item {i} ({cat})", [cat]) for i in range(20)])
    assert gen.source("als").index.ntotal == gen.n_items
    ids, _ = gen.retrieve_ids(art.item_ids[members(art, cat)[:15]].tolist(), [], 300, {}, False)
    assert any(x.startswith("new-") for x in ids)


def test_requests_during_add_items_see_whole_snapshots(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=80))
    cats = art.catalog.category_names
    history = art.item_ids[members(art, cats[0])[:10]].tolist()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for b in range(40):
                batch = [NewItem(f"n{b}-{i}", f"Item {b}{i}", [cats[(b + i) % len(cats)]]) for i in range(5)]
                batch.append(NewItem(f"n{max(b - 1, 0)}-0", "changed", [cats[b % len(cats)]]))  # re-place
                gen.add_items(batch)
                time.sleep(0.001)  # let requests in between batches as well as during them
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    reads, observed = 0, set()
    while not stop.is_set() or reads < 20:
        lengths = per_item_lengths(gen)
        assert len(set(lengths.values())) == 1, lengths
        observed.add(lengths["snapshot"])
        seen = [f"n{reads % 40}-{i}" for i in range(3)]  # ids that may or may not exist yet
        ids, c = gen.retrieve_ids(history + seen, seen[:1], 80, {}, False)
        assert len(ids) == len(set(ids)) and not set(ids) & set(history + seen)
        assert c.scores.shape == (len(ids), len(gen.score_names))
        reads += 1
    t.join()
    assert not errors, errors
    assert len(observed) > 2  # the reads really ran while the catalog grew
    assert gen.n_items == art.catalog.n_items + 200
    assert set(per_item_lengths(gen).values()) == {gen.n_items}


def test_a_legacy_bundle_without_a_content_map_loads_and_grows(small_bundle: Path, tmp_path: Path):
    legacy = tmp_path / "retrieval"
    shutil.copytree(small_bundle / "retrieval", legacy)
    (legacy / "content_map.npz").unlink()
    (legacy / "content_map.json").unlink()
    meta = json.loads((legacy / "retrieval.json").read_text())
    del meta["content_map"]
    (legacy / "retrieval.json").write_text(json.dumps(meta))
    art = RetrievalArtifacts.load(legacy)
    assert art.content_map is None and isinstance(art.vectorizer(), CategoryMeans)
    gen = CandidateGenerator(art)
    a, b = art.catalog.category_names[:2]
    idx = gen.add_items([NewItem("new-1", "t", [a, b]), NewItem("new-2", "t", [])])
    centroid = {c: art.item_factors[members(art, c)].mean(axis=0) for c in (a, b)}
    assert np.allclose(gen.art.item_factors[idx[0]], (centroid[a] + centroid[b]) / 2, atol=1e-5)
    assert np.allclose(gen.art.item_factors[idx[1]], art.item_factors.mean(axis=0), atol=1e-5)


class Fixed(CandidateSource):
    """A source without add_items of its own: the default hook must hide new items from it."""

    name, columns, primary, quota = "fixed", ("fixed_score",), "fixed_score", 0.2

    def __init__(self, catalog: Catalog):
        self.catalog, self.weights = catalog, np.linspace(1, 0.1, catalog.n_items).astype(np.float32)

    @classmethod
    def build(cls, data: TrainingData) -> Fixed:
        return cls(data.catalog)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> Fixed:
        return cls(catalog)

    def save(self, directory: Path) -> dict[str, Any]:
        return {}

    def propose(self, req: SourceRequest) -> Proposal:
        _ = self.weights[req.history]  # indexes its own table by history: must never see new rows
        return Proposal(np.argsort(-self.weights)[: req.depth], lambda items: {"fixed_score": self.weights[items]})


def test_a_source_without_add_items_keeps_working(art):
    custom = RetrievalArtifacts(art.catalog, [*art.sources, Fixed(art.catalog)], content_map=art.content_map)
    gen = CandidateGenerator(custom, GeneratorConfig(n=100))
    n0 = gen.n_items
    gen.add_items([NewItem("new-1", "", [art.catalog.category_names[0]])])
    assert gen.source("fixed").n_known == n0
    ids, c = gen.retrieve_ids(["new-1", *art.item_ids[:5].tolist()], [], gen.n_items, {}, True)  # everything
    col = c.scores[:, c.score_names.index("fixed_score")]
    assert np.isnan(col[ids.index("new-1")]) and np.isfinite(np.delete(col, ids.index("new-1"))).all()


def test_ranker_embeddings_take_new_items():
    emb = ItemEmbeddings.from_factors(np.array(["a", "b"]), np.array([[1, 0], [0, 2]], np.float32))
    grown = emb.with_items(["c", "b"], np.array([[3, 4], [5, 0]], np.float32))
    assert np.allclose(grown.lookup(["a", "b", "c", "zz"]), [[1, 0], [1, 0], [0.6, 0.8], [0, 0]])
    assert np.allclose(emb.lookup(["b", "c"]), [[0, 1], [0, 0]])  # the original is untouched


def test_embeddings_over_one_catalog_share_one_row_map():
    """Training's folds pass one item → row map (a million entries at 1M items) instead of one each; growing
    one fold's embeddings never writes into the shared map."""
    ids = np.array(["a", "b"])
    row = {"a": 0, "b": 1}
    emb = ItemEmbeddings.from_factors(ids, np.array([[1, 0], [0, 2]], np.float32), row)
    other = ItemEmbeddings.from_factors(ids, np.array([[0, 3], [4, 0]], np.float32), row)
    assert emb.item_row is other.item_row is row
    assert np.allclose(emb.lookup(["b", "a", "zz"]), ItemEmbeddings.from_factors(
        ids, np.array([[1, 0], [0, 2]], np.float32)).lookup(["b", "a", "zz"]))
    emb.with_items(["c"], np.array([[1, 1]], np.float32))
    assert row == {"a": 0, "b": 1}


def test_the_items_consumer_skims_a_long_batch_in_paced_chunks(art):
    """150 interactions around two upserts: decoded with a yield to requests every 64 records, and the
    upserts (the last of an id winning) added in one call."""
    from recsys.client import interaction, item_upsert
    from recsys.events.codec import encode_event
    from recsys.events.items import ItemApplier
    from recsys.stream.base import Entry

    gen = CandidateGenerator(art, GeneratorConfig(n=100))
    n0, cat = gen.n_items, art.catalog.category_names[0]
    events = [interaction("u1", art.item_ids[k % 50], "view") for k in range(150)]
    events.insert(70, item_upsert("paced-a", "First title", [cat]))
    events.insert(120, item_upsert("paced-a", "Second title", [cat]))
    paced: list[int] = []
    ItemApplier(gen, "items@test", pace=lambda: paced.append(1))(
        [Entry(str(i), encode_event(ev, 1_000)) for i, ev in enumerate(events)])
    assert len(paced) == 2  # before records 64 and 128 of 152
    assert gen.n_items == n0 + 1 and gen.art.catalog.item_ids[-1] == "paced-a"


def test_the_pruned_index_serves_the_exact_index_lists(art):
    """index=pruned is an exact scan that stops early: on the same bundle its candidates (ids and order) are
    the exact index's, for histories drawn from every category, and so are their source scores, except that
    items with exactly equal inner products (the same vector: items placed alike) may swap their ANN ranks."""
    exact = CandidateGenerator(art, GeneratorConfig(n=300, index="exact"))
    pruned = CandidateGenerator(art, GeneratorConfig(n=300, index="pruned"))
    rng = np.random.default_rng(7)
    for _ in range(40):
        history = art.item_ids[rng.choice(len(art.item_ids), size=int(rng.integers(1, 30)), replace=False)].tolist()
        want_ids, want = exact.retrieve_ids(history, [], 300, {}, False)
        got_ids, got = pruned.retrieve_ids(history, [], 300, {}, False)
        assert got_ids == want_ids
        close = np.isclose(got.scores, want.scores, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert close.mean() > 0.998, f"{(~close).sum()} of {close.size} source scores differ"
