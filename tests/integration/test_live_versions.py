"""Two versions trained on different data, held side by side: every stage answers from the version asked."""

from __future__ import annotations

import grpc
import pytest

from recsys.bundle import read_metadata
from recsys.client import RecommenderClient
from recsys.cluster import start_cluster
from recsys.v1 import (
    candidates_pb2,
    candidates_pb2_grpc,
    features_pb2,
    features_pb2_grpc,
    versions_pb2,
    versions_pb2_grpc,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory):
    """A bundle on other data: a smaller catalog, so its items are a strict subset of the first's ids."""
    from recsys.data.synthetic import generate
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    ds = generate(n_users=300, n_items=250, n_interactions=12_000, n_categories=5, seed=8)
    out = tmp_path_factory.mktemp("other") / "b"
    train(ds, out, small_train_config(), dataset_spec="synthetic:other", show_progress=False)
    return out


def test_every_stage_answers_from_the_pinned_version(small_bundle, other_bundle, tmp_path):
    v1, v2 = read_metadata(small_bundle).version, read_metadata(other_bundle).version
    with start_cluster([small_bundle, other_bundle], port=0, metrics=False, log_dir=tmp_path) as c, \
            RecommenderClient(c.target) as client, \
            grpc.insecure_channel(c.services["candidate_svc"].address) as cch, \
            grpc.insecure_channel(c.services["feature_svc"].address) as fch:
        retrieve = candidates_pb2_grpc.CandidateRetrieverStub(cch).Retrieve
        features = features_pb2_grpc.FeatureStoreStub(fch)
        for svc in ("feature_svc", "candidate_svc", "ranker_svc"):
            with grpc.insecure_channel(c.services[svc].address) as ch:
                listed = versions_pb2_grpc.ModelVersionsStub(ch).List(versions_pb2.ListVersionsRequest(), timeout=5)
            assert set(listed.versions) == {v1, v2} and listed.default_version == v1, svc
        for version in (v1, v2):
            resp = client.recommend("u1", 10, model_version=version)
            assert resp.model_version == version
            cands = retrieve(candidates_pb2.RetrieveRequest(user_id="u1", history=["i1", "i2"], n=200,
                                                            model_version=version), timeout=10)
            assert cands.model_version == version
            items = features.GetItemFeatures(features_pb2.GetItemFeaturesRequest(
                item_ids=[it.item_id for it in resp.items], model_version=version), timeout=10)
            assert items.model_version == version and all(items.found)
            users = features.GetUserFeatures(features_pb2.GetUserFeaturesRequest(
                user_ids=["u1"], model_version=version), timeout=10)
            assert users.model_version == version
        # v2's catalog has 250 items: its answers can only name them (v1 knows 600)
        v2_items = {f"i{i}" for i in range(250)}
        assert {it.item_id for it in client.recommend("u5", 20, model_version=v2).items} <= v2_items
        cands = retrieve(candidates_pb2.RetrieveRequest(user_id="u1", history=["i1"], n=300, model_version=v2))
        assert set(cands.item_ids) <= v2_items
        assert len(set(retrieve(candidates_pb2.RetrieveRequest(user_id="u1", history=["i1"], n=300,
                                                                model_version=v1)).item_ids) - v2_items) > 0
        for call in (lambda: retrieve(candidates_pb2.RetrieveRequest(user_id="u1", model_version="nope")),
                     lambda: features.GetUserFeatures(features_pb2.GetUserFeaturesRequest(
                         user_ids=["u1"], model_version="nope"))):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "'nope'" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            retrieve(candidates_pb2.RetrieveRequest(user_id="u1", source_quotas={"bogus": 0.5}))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bogus" in err.value.details()


def test_registry_live_set(small_bundle, other_bundle, tmp_path):
    import shutil

    from recsys.bundle import BundleError
    from recsys.registry import Registry

    reg = Registry(tmp_path / "models")
    reg.root.mkdir()
    for b in (small_bundle, other_bundle):
        shutil.copytree(b, reg.path(read_metadata(b).version))
    v1, v2 = read_metadata(small_bundle).version, read_metadata(other_bundle).version
    reg.promote(v1, force=True)
    assert reg.serving() == (v1, [v1])
    assert reg.add_live(v2) == [v2]
    assert reg.serving() == (v1, [v1, v2])
    assert reg.remove_live(v2) == []
    with pytest.raises(BundleError, match="not in the live set"):
        reg.remove_live(v2)
    with pytest.raises(BundleError):
        reg.add_live("no-such-version")


def test_models_live_command(small_bundle, other_bundle, tmp_path, capsys):
    import shutil

    from recsys.cli import main

    root = tmp_path / "models"
    root.mkdir()
    for b in (small_bundle, other_bundle):
        shutil.copytree(b, root / read_metadata(b).version)
    v1, v2 = read_metadata(small_bundle).version, read_metadata(other_bundle).version
    assert main(["models", "promote", v1, "--registry", str(root), "--force"]) == 0
    assert main(["models", "live", "add", v2, "--registry", str(root)]) == 0
    assert f"every service holds: {v1}, {v2}" in capsys.readouterr().out
    assert main(["models", "live", "remove", v2, "--registry", str(root)]) == 0
    assert main(["models", "live", "remove", v2, "--registry", str(root)]) == 2
    assert main(["models", "live", "add", "--registry", str(root)]) == 2
