import numpy as np
import pytest
import scipy.sparse as sp

from recsys.retrieval.als import ALSParams, FoldIn
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.retrieval.sources import DEFAULT_SOURCES
from recsys.retrieval.sources.als import ALSSource
from recsys.retrieval.sources.base import Catalog
from recsys.retrieval.sources.content import ContentSource
from recsys.retrieval.sources.i2i import ItemToItemSource
from recsys.retrieval.sources.popular import PopularSource
from recsys.retrieval.sources.segment import SegmentSource
from recsys.retrieval.sources.sequence import SequenceSource

N = 12


@pytest.fixture
def art() -> RetrievalArtifacts:
    rng = np.random.default_rng(0)
    nb = np.zeros((N, N), np.float32)
    nb[0, 1] = nb[0, 2] = 0.5
    nb[1, 3] = 0.9
    cats = np.zeros((N, 2), np.float32)
    cats[:6, 0] = 1
    cats[6:, 1] = 1
    cold = np.zeros(N, bool)
    cold[[10, 11]] = True
    seg = np.zeros((1, N), np.float32)
    seg[0, [7, 8]] = [1.0, 0.5]
    catalog = Catalog(item_ids=np.array([f"i{i}" for i in range(N)]),
                      item_factors=rng.normal(size=(N, 4)).astype(np.float32),
                      item_categories=sp.csr_matrix(cats), category_names=["x", "y"])
    return RetrievalArtifacts(catalog=catalog, sources=[
        ALSSource(catalog, ALSParams(factors=4)), ItemToItemSource(catalog, sp.csr_matrix(nb), "ease"),
        PopularSource(catalog, np.linspace(1, 0, N).astype(np.float32)),
        SegmentSource(catalog, ["age=30"], sp.csr_matrix(seg)), ContentSource(catalog, cold)])


def with_sequence(art: RetrievalArtifacts, table: np.ndarray) -> RetrievalArtifacts:
    return RetrievalArtifacts(art.catalog, [*art.sources, SequenceSource(art.catalog, sp.csr_matrix(table))])


def test_history_and_exclusions_are_filtered(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=8))
    c = gen.retrieve(np.array([0, 1]), exclude=np.array([3]))
    assert len(c.items) == 8
    assert not {0, 1, 3} & set(c.items.tolist())
    assert len(set(c.items.tolist())) == len(c.items)
    assert c.scores.shape == (8, len(gen.score_names))


def test_include_seen_keeps_history(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=N))
    c = gen.retrieve(np.array([0, 1]), include_seen=True)
    assert {0, 1} <= set(c.items.tolist())


def test_item_to_item_scores_and_sources(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=N))
    c = gen.retrieve(np.array([0, 1]))
    row = c.items.tolist().index(3)
    assert c.scores[row, c.score_names.index("i2i_score")] == pytest.approx(0.9)
    assert "i2i" in c.source_names_of(row)
    assert c.scores[row, c.score_names.index("i2i_rank")] == 1  # 3 is the best item-to-item candidate


def test_cold_user_gets_popular_and_segment(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=4))
    c = gen.retrieve(np.array([], dtype=np.int64), attributes={"age": "30"})
    names = {s for i in range(len(c.items)) for s in c.source_names_of(i)}
    assert names <= {"popular", "segment"} and "segment" in names
    assert 7 in c.items.tolist()
    assert np.isnan(c.scores[:, c.score_names.index("als_score")]).all()


def test_content_source_proposes_cold_items_in_liked_categories(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=N, quotas={"content": 1.0}))
    c = gen.retrieve(np.array([6, 7]))  # history in category y, where the cold items are
    assert c.items[:2].tolist() == [10, 11]
    assert all("content" in c.source_names_of(i) for i in range(2))


def test_unknown_ids_are_skipped(art):
    gen = CandidateGenerator(art)
    assert gen.indices(["i3", "nope", "i0"]).tolist() == [3, 0]
    assert set(DEFAULT_SOURCES) >= {"als", "i2i", "popular", "segment", "content", "seq"}


def test_fold_in_matches_closed_form():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(20, 3))
    f = FoldIn(y, regularization=0.1, alpha=2.0)
    hist = np.array([1, 5, 7])
    c = np.ones(20)
    c[hist] = 3.0
    p = np.zeros(20)
    p[hist] = 1.0
    expected = np.linalg.solve(y.T @ np.diag(c) @ y + 0.1 * np.eye(3), y.T @ (c * p))
    assert np.allclose(f.user_vector(hist), expected, atol=1e-5)
    assert not f.user_vector(np.array([], dtype=int)).any()


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "pruned"])
def test_ann_indexes_agree_with_brute_force(kind):
    from recsys.retrieval.ann import build_index, search

    rng = np.random.default_rng(3)
    centers = rng.normal(size=(20, 16))  # clustered, like learned item embeddings
    vecs = (centers[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 16))).astype(np.float32)
    q = (centers[0] + 0.3 * rng.normal(size=16)).astype(np.float32)
    truth = set(np.argsort(-(vecs @ q))[:20].tolist())
    ids, scores = search(build_index(vecs, kind), q, 20)
    assert len(truth & set(ids.tolist())) >= (20 if kind in ("exact", "pruned") else 14)
    assert np.all(np.diff(scores) <= 1e-5)


def test_unknown_index_kind_is_an_error():
    from recsys.retrieval.ann import build_index

    with pytest.raises(ValueError, match="index kind"):
        build_index(np.zeros((3, 2), np.float32), "annoy")


def test_sequence_source_scores_and_proposes(art):
    seq = np.zeros((N, N), np.float32)
    seq[0, 9] = 0.7
    seq[1, 9] = 0.2
    c = CandidateGenerator(with_sequence(art, seq), GeneratorConfig(n=8)).retrieve(np.array([0, 1]))
    row = c.items.tolist().index(9)
    assert c.scores[row, c.score_names.index("seq_score")] == pytest.approx(0.9)  # summed over the history
    assert c.scores[row, c.score_names.index("seq_rank")] == 1
    assert "seq" in c.source_names_of(row)


def test_bundles_without_sequence_table_score_nan(art, tmp_path):
    art.save(tmp_path)
    loaded = RetrievalArtifacts.load(tmp_path)
    assert loaded.source("seq") is None
    c = CandidateGenerator(loaded, GeneratorConfig(n=8)).retrieve(np.array([0, 1]))
    assert "seq_score" not in c.score_names  # the ranker sees a missing feature as NaN
    art = with_sequence(art, np.eye(N, k=1, dtype=np.float32))
    art.save(tmp_path)
    assert (RetrievalArtifacts.load(tmp_path).source("seq").table != art.source("seq").table).nnz == 0


def test_legacy_bundle_without_a_source_list_loads_the_six_sources(art, tmp_path):
    import json

    with_sequence(art, np.eye(N, k=1, dtype=np.float32)).save(tmp_path)
    meta = json.loads((tmp_path / "retrieval.json").read_text())
    del meta["sources"]
    (tmp_path / "retrieval.json").write_text(json.dumps(meta))
    loaded = RetrievalArtifacts.load(tmp_path)
    assert [s.name for s in loaded.sources] == list(DEFAULT_SOURCES)
    gen = CandidateGenerator(loaded)
    assert gen.relative_score_names == ["als_score", "i2i_score", "segment_score", "content_score", "seq_score"]
    assert gen.quotas["i2i"] == 0.4


def test_request_quotas_override_the_bundle_and_unknown_sources_are_rejected(art):
    gen = CandidateGenerator(art, GeneratorConfig(n=6))
    c = gen.retrieve(np.array([6, 7]), quotas={"content": 1.0, "als": 0.0, "i2i": 0.0})
    assert c.items[:2].tolist() == [10, 11]
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        gen.check_quotas({"nope": 0.5})
