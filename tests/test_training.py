"""The bundle that training writes, and what it promises."""

import json

import numpy as np
import pytest

from recsys.bundle import BundleError, read_metadata
from recsys.feature_tables import FeatureTables
from recsys.pipeline.model import ServingModel
from recsys.pipeline.offline import OfflineStack
from recsys.retrieval.artifacts import RetrievalArtifacts


def test_bundle_layout_and_metadata(small_bundle, small_dataset):
    meta = read_metadata(small_bundle)
    assert meta.data_fingerprint == small_dataset.fingerprint()
    for key in ("ranker_valid_ndcg@10", "valid_ndcg@10", "valid_no_diversity_ndcg@10", "ranker_train_valid_gap"):
        assert key in meta.metrics
    assert meta.params["neighbor_method"] == "ease"
    art = RetrievalArtifacts.load(small_bundle / "retrieval")
    tables = FeatureTables.load(small_bundle / "features")
    assert len(art.item_ids) == tables.n_items
    assert art.item_factors.shape[0] == len(art.item_ids)
    model = ServingModel.load(small_bundle)
    assert model.version == meta.version
    names = model.ranker.feature_names
    assert "i2i_score_z" in names and model.ranker.base.get("i2i_score_z") == 1.0
    assert not {"n_sources", "i2i_score", "seq_score", "item_n_interactions", "user_first_ts"} & set(names)
    assert "seq_score_z" in names and art.source("seq") is not None and art.source("seq").table.nnz > 0
    # the tree gate's decision is recorded and matches the shipped model
    assert meta.metrics["ranker_trees_used"] == float(model.ranker.use_trees)
    if not model.ranker.use_trees:
        assert meta.metrics["ranker_valid_list_ndcg@10"] - meta.metrics["ranker_valid_base_only_ndcg@10"] < 0.001


def test_pipeline_beats_popularity_on_validation(small_bundle):
    m = read_metadata(small_bundle).metrics
    assert m["valid_no_diversity_ndcg@10"] > 1.3 * m["valid_popularity_ndcg@10"]
    assert m["valid_ndcg@10"] > m["valid_popularity_ndcg@10"]
    assert m["valid_candidate_recall@100"] > 0.3


def test_offline_stack_excludes_seen_items(small_bundle, small_dataset):
    stack = OfflineStack.from_bundle(small_bundle)
    inter = small_dataset.interactions
    users = inter["user_id"].unique()[:20].tolist()
    recs = stack.recommend_many(users, 10)
    for u in users:
        seen = set(inter.loc[inter["user_id"] == u, "item_id"])
        ids = [i.item_id for i in recs[u].items]
        assert len(ids) == 10 and not set(ids) & seen


def test_corrupt_bundle_is_rejected(small_bundle, tmp_path):
    import shutil

    import pytest

    bad = tmp_path / "bad"
    shutil.copytree(small_bundle, bad)
    (bad / "ranker" / "model.txt").write_text("garbage")
    with pytest.raises(BundleError, match="checksum"):
        ServingModel.load(bad)
    with pytest.raises(BundleError, match="ranker"):  # even without the checksum check, loading fails clearly
        ServingModel.load(bad, verify=False)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["format_version"] = 99
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format"):
        read_metadata(bad)
    with pytest.raises(BundleError, match="metadata"):
        read_metadata(tmp_path)


def test_popularity_table_is_log_scaled(small_bundle):
    art = RetrievalArtifacts.load(small_bundle / "retrieval")
    popularity = art.source("popular").popularity
    assert np.isclose(popularity.max(), 1.0) and popularity.min() >= 0


def test_training_is_deterministic(small_dataset, small_bundle, tmp_path):
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    again = tmp_path / "again"
    train(small_dataset, again, small_train_config(), show_progress=False)
    first, second = read_metadata(small_bundle).metrics, read_metadata(again).metrics
    for key in ("valid_ndcg@10", "ranker_valid_ndcg@10", "ranker_best_iteration", "valid_candidate_recall@100"):
        assert first[key] == second[key], key
    strip = [line for line in (small_bundle / "ranker" / "model.txt").read_text().splitlines()
             if not line.startswith("[") and "version" not in line]
    strip2 = [line for line in (again / "ranker" / "model.txt").read_text().splitlines()
              if not line.startswith("[") and "version" not in line]
    assert strip == strip2
    assert np.array_equal(np.load(small_bundle / "retrieval" / "item_factors.npy"),
                          np.load(again / "retrieval" / "item_factors.npy"))


def test_bundle_ships_prebuilt_faiss_indexes(small_bundle):
    import faiss

    from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig

    art = RetrievalArtifacts.load(small_bundle / "retrieval")
    assert art.index_path("exact") and art.index_path("hnsw") and art.index_path("ivf") is None
    hnsw = CandidateGenerator(art, GeneratorConfig(index="hnsw"))
    assert isinstance(hnsw.source("als").index, faiss.IndexHNSWFlat)
    ivf = CandidateGenerator(art, GeneratorConfig(index="ivf"))  # not shipped: built at load
    assert isinstance(ivf.source("als").index, faiss.IndexIVFFlat)
    exact = CandidateGenerator(art, GeneratorConfig(index="exact"))
    hist = np.arange(5)
    a = set(exact.retrieve(hist, n=50).items.tolist())
    b = set(hnsw.retrieve(hist, n=50).items.tolist())
    assert len(a & b) >= 40  # approximate search finds nearly the same candidates


def test_explanations_add_up_to_the_score(small_bundle):
    model = ServingModel.load(small_bundle)
    x = np.random.default_rng(0).normal(size=(20, len(model.ranker.feature_names))).astype(np.float32)
    residual = model.ranker.score(x) - model.ranker.explain(x).sum(axis=1)
    assert np.allclose(residual, residual[0], atol=1e-6)  # what is left is the constant bias


@pytest.mark.redis
def test_shared_store_keeps_events_when_a_replica_reloads_the_same_bundle(small_bundle, redis_url):
    from recsys.storage import Event, open_storage
    from recsys.storage.bundle_loader import load_bundle_features

    first, second = open_storage(redis_url), open_storage(redis_url)
    try:
        load_bundle_features(first, small_bundle)
        first.record_events([Event("brand-new-user", "i1", "click", 1.0, 1)])
        load_bundle_features(second, small_bundle)  # another replica starting: same version, no reload
        assert first.get_users(["brand-new-user"])[0].history == ["i1"]
    finally:
        first.close()
        second.close()
