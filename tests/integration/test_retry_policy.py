"""The clients' retry policy against real servers that cannot answer yet (issue 11, item 3): the ranker's
calls to feature_svc and the public Python client retry UNAVAILABLE, never INVALID_ARGUMENT, and their
retry budget stops retrying in an outage instead of multiplying the load on the failing service.

The servers are the real servicers in their real starting state (no features or model loaded: every call
is UNAVAILABLE), hosted in this process so the attempts each one received are read from its metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import REGISTRY

from feature_svc.server import FeatureStoreServicer
from ranker_svc.server import RecommenderServicer
from ranker_svc.settings import RankerSettings
from recsys.client import RecommenderClient
from recsys.rpc.remote import Channels, DependencyError, RemoteFeatureSource
from recsys.rpc.retry import DEFAULT_POLICY
from recsys.rpc.server import Server
from recsys.v1 import features_pb2_grpc, recommender_pb2_grpc

from .inprocess_server import InProcessServer

pytestmark = pytest.mark.integration
BUDGET = DEFAULT_POLICY.max_tokens // 2  # retries an outage can cost at most, over all calls


def attempts(service: str, method: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_started_total",
                                     {"grpc_service": service, "grpc_method": method}) or 0.0


def _feature_store(server: Server) -> None:
    server.add(features_pb2_grpc.add_FeatureStoreServicer_to_server, FeatureStoreServicer(),
               "recsys.v1.FeatureStore")


def _calls(port: int, user_id: str, n: int) -> list[grpc.StatusCode]:
    async def run() -> list[grpc.StatusCode]:
        channels = Channels(f"127.0.0.1:{port}", f"127.0.0.1:{port}")
        source = RemoteFeatureSource(channels, lambda: 2.0)
        codes = []
        try:
            for _ in range(n):
                try:
                    await source.get_user(user_id, 0)
                    codes.append(grpc.StatusCode.OK)
                except DependencyError as exc:
                    codes.append(exc.__cause__.code())
        finally:
            await channels.close()
        return codes

    return asyncio.run(run())


def test_the_ranker_retries_unavailable_within_its_budget():
    with InProcessServer(_feature_store) as srv:
        before = attempts("recsys.v1.FeatureStore", "GetUserFeatures")
        assert _calls(srv.port, "u1", 1) == [grpc.StatusCode.UNAVAILABLE]
        first = attempts("recsys.v1.FeatureStore", "GetUserFeatures") - before
        assert first == DEFAULT_POLICY.max_attempts  # retried while the budget is full
        codes = _calls(srv.port, "u1", 40)  # a fresh channel: a fresh budget
        total = attempts("recsys.v1.FeatureStore", "GetUserFeatures") - before - first
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 40
    assert 40 < total <= 40 + BUDGET, f"{total} attempts for 40 calls: an outage must not be amplified"


def test_the_ranker_never_retries_invalid_argument():
    with InProcessServer(_feature_store) as srv:
        before = attempts("recsys.v1.FeatureStore", "GetUserFeatures")
        codes = _calls(srv.port, "", 10)  # an empty user id
        total = attempts("recsys.v1.FeatureStore", "GetUserFeatures") - before
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 10
    assert total == 10


def _ranker_without_model(server: Server) -> None:
    channels = Channels("127.0.0.1:1", "127.0.0.1:1")  # never called: there is no model to serve
    servicer = RecommenderServicer(channels, RankerSettings(exposures=False))
    server.add(recommender_pb2_grpc.add_RecommenderServicer_to_server, servicer, "recsys.v1.Recommender")


def test_the_python_client_retries_unavailable_but_not_invalid_argument():
    with InProcessServer(_ranker_without_model) as srv, RecommenderClient(f"127.0.0.1:{srv.port}") as client:
        before = attempts("recsys.v1.Recommender", "Recommend")
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("u1", 5, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "no model loaded" in err.value.details()
        assert attempts("recsys.v1.Recommender", "Recommend") - before == DEFAULT_POLICY.max_attempts
        mid = attempts("recsys.v1.Recommender", "Recommend")
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("u1", 0, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert attempts("recsys.v1.Recommender", "Recommend") - mid == 1
        mid = attempts("recsys.v1.Recommender", "Recommend")
        for _ in range(30):
            with pytest.raises(grpc.RpcError):
                client.recommend("u1", 5, timeout=5)
        assert attempts("recsys.v1.Recommender", "Recommend") - mid <= 30 + BUDGET
