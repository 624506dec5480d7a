"""GetItemFeatures' packed answer (float32 bytes, ids not echoed) carries exactly what the plain answer
carries, over a real gRPC server: the ranker reads the same item views either way, and the same views the
in-process pipeline reads from the store itself; the size limit trips at the same entry in both forms."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from feature_svc.server import ITEM_CHUNK, FeatureStoreServicer
from recsys.feature_tables import FeatureTables
from recsys.pipeline.local import LocalFeatureSource
from recsys.rpc.limits import ResponseBudget, strings_size
from recsys.rpc.remote import Channels, RemoteFeatureSource, item_views
from recsys.storage import EmbeddedStorage
from recsys.v1 import features_pb2 as pb
from recsys.v1 import features_pb2_grpc

from .inprocess_server import InProcessServer

pytestmark = pytest.mark.integration
N_ITEMS = 1500


def _tables() -> FeatureTables:
    rng = np.random.default_rng(3)
    ids = [f"item-{k}" for k in range(N_ITEMS)]
    return FeatureTables(
        user_ids=["u1"], user_feature_names=["user_n_interactions"], user_values=np.ones((1, 1), np.float32),
        user_history=[ids[:3]], user_attributes=[{}], item_ids=ids,
        item_feature_names=["item_popularity_rel", "item_n_interactions", "item_mean_ts"],
        item_values=rng.normal(size=(N_ITEMS, 3)).astype(np.float32),
        item_categories=[[f"c{j}" for j in range(k % 4)] for k in range(N_ITEMS)],  # some have none
        item_titles=[f"Title {k} – naïve" if k % 5 else "" for k in range(N_ITEMS)], created_at=1.7e9)


class FeatureServer(InProcessServer):
    """feature_svc's servicer on a loopback port, in a thread with its own event loop."""

    def __init__(self, max_message_bytes: int = 4 * 1024 * 1024):
        self.storage = EmbeddedStorage()
        self.storage.load(_tables())
        self.servicer = FeatureStoreServicer(max_message_bytes=max_message_bytes)
        self.servicer.versions.add("", self.storage)
        super().__init__(lambda server: server.add(features_pb2_grpc.add_FeatureStoreServicer_to_server,
                                                   self.servicer, "recsys.v1.FeatureStore"))


def _ids(n: int = 2600, seed: int = 0) -> list[str]:
    """Known and unknown ids, repeated ones too, across several of the server's read chunks."""
    rng = np.random.default_rng(seed)
    return [f"item-{k}" for k in rng.integers(0, N_ITEMS + 200, size=n)]


def _same_views(a, b) -> None:
    assert [v.item_id for v in a] == [v.item_id for v in b]
    assert [v.found for v in a] == [v.found for v in b]
    assert [v.title for v in a] == [v.title for v in b]
    assert [list(v.categories) for v in a] == [list(v.categories) for v in b]
    np.testing.assert_array_equal(np.stack([v.values for v in a]), np.stack([v.values for v in b]))


def test_packed_and_plain_answers_carry_the_same_items():
    ids = _ids()
    assert len(ids) > 2 * ITEM_CHUNK
    with FeatureServer() as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        stub = features_pb2_grpc.FeatureStoreStub(channel)
        plain = stub.GetItemFeatures(pb.GetItemFeaturesRequest(item_ids=ids), timeout=10)
        packed = stub.GetItemFeatures(pb.GetItemFeaturesRequest(item_ids=ids, packed=True), timeout=10)
    assert not plain.values_le32 and len(plain.values) == 3 * len(ids) and list(plain.item_ids) == ids
    assert not packed.values and not packed.item_ids and len(packed.values_le32) == 4 * 3 * len(ids)
    names_plain, views_plain = item_views(plain, ids)
    names_packed, views_packed = item_views(packed, ids)
    assert names_plain == names_packed == ["item_popularity_rel", "item_n_interactions", "item_mean_ts"]
    _same_views(views_plain, views_packed)
    missing = [v for v in views_packed if not v.found]
    assert missing and all(np.isnan(v.values).all() and not v.categories and not v.title for v in missing)


def test_the_ranker_reads_what_the_in_process_pipeline_reads():
    ids = _ids(seed=1)

    async def remote(port: int):
        channels = Channels(f"127.0.0.1:{port}", f"127.0.0.1:{port}")
        try:
            return await RemoteFeatureSource(channels, lambda: 10.0).get_items(ids)
        finally:
            await channels.close()

    with FeatureServer() as srv:
        names, views = asyncio.run(remote(srv.port))
        local_names, local_views = asyncio.run(LocalFeatureSource(srv.storage).get_items(ids))
    assert names == local_names
    _same_views(views, local_views)


@pytest.mark.parametrize("packed", [False, True])
def test_the_size_limit_stops_at_the_same_entry_as_charging_items_one_by_one(packed):
    ids = _ids(seed=2)
    limit = 20_000
    # the reference: the per-item charge the servicer made before it read columns
    storage = FeatureServer().storage
    ref, n_names = ResponseBudget(limit, "the answer (item_ids x their features)"), len(storage.item_feature_names)
    with pytest.raises(Exception) as want:
        for done, (item_id, rec) in enumerate(zip(ids, storage.get_items(ids), strict=True), start=1):
            extra = 0 if rec is None else len(rec.title) + strings_size(rec.categories)
            ref.spend(len(item_id) + 5 * n_names + 8 + extra, done, len(ids))
    with FeatureServer(max_message_bytes=limit) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel, \
            pytest.raises(grpc.RpcError) as got:
        features_pb2_grpc.FeatureStoreStub(channel).GetItemFeatures(
            pb.GetItemFeaturesRequest(item_ids=ids, packed=packed), timeout=10)
    assert got.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.value.details() == str(want.value)


def test_bad_ids_are_refused_naming_the_first_one():
    with FeatureServer() as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        stub = features_pb2_grpc.FeatureStoreStub(channel)
        for ids, index in ((["item-1", "", "x" * 600], 1), (["item-1", "item-2", "x" * 513], 2)):
            with pytest.raises(grpc.RpcError) as err:
                stub.GetItemFeatures(pb.GetItemFeaturesRequest(item_ids=ids, packed=True), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == f"item_ids[{index}] must be a non-empty id of at most 512 characters"
        assert len(stub.GetItemFeatures(pb.GetItemFeaturesRequest(item_ids=["x" * 512]), timeout=10).found) == 1
