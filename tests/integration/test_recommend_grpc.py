"""Recommend through the three real services on loopback."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.client import RecommenderClient
from recsys.v1 import recommender_pb2 as pb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(cluster):
    with RecommenderClient(cluster.target) as c:
        yield c


@pytest.fixture(scope="module")
def heavy_user(small_dataset) -> tuple[str, set[str]]:
    inter = small_dataset.interactions
    user = inter["user_id"].value_counts().index[0]
    return str(user), set(inter.loc[inter["user_id"] == user, "item_id"])


def test_known_user_gets_k_unseen_items(client, heavy_user):
    user, seen = heavy_user
    resp = client.recommend(user, 10)
    ids = [it.item_id for it in resp.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not set(ids) & seen
    assert resp.model_version and resp.request_id and not resp.cold_start and not resp.fallback
    assert all(it.sources for it in resp.items)
    assert all(it.title for it in resp.items)


def test_include_seen_and_exclude(client, heavy_user):
    user, seen = heavy_user
    first = [it.item_id for it in client.recommend(user, 5).items]
    resp = client.recommend(user, 5, exclude_item_ids=first[:2])
    assert not set(first[:2]) & {it.item_id for it in resp.items}
    with_seen = client.recommend(user, 50, include_seen=True, diversity_lambda=1.0)
    assert {it.item_id for it in with_seen.items} & seen


def test_request_id_is_echoed(client, heavy_user):
    assert client.recommend(heavy_user[0], 3, request_id="abc-123").request_id == "abc-123"


def test_unknown_user_gets_cold_start(client, small_dataset):
    attrs = {c: str(small_dataset.users.iloc[0][c]) for c in small_dataset.users.columns if c != "user_id"}
    resp = client.recommend("never-seen-user", 10, user_attributes=attrs)
    assert resp.cold_start and len(resp.items) == 10
    assert {s for it in resp.items for s in it.sources} <= {"popular", "segment"}
    plain = client.recommend("another-new-user", 10)
    assert plain.cold_start and len(plain.items) == 10


def test_explain_returns_contributions(client, heavy_user):
    resp = client.recommend(heavy_user[0], 3, explain=True)
    assert all(it.contributions for it in resp.items)
    total = sum(abs(c.contribution) for c in resp.items[0].contributions)
    assert total > 0
    assert not client.recommend(heavy_user[0], 3).items[0].contributions


def test_diversity_lambda_changes_the_list(client, heavy_user):
    pure = [it.item_id for it in client.recommend(heavy_user[0], 10, diversity_lambda=1.0).items]
    diverse = client.recommend(heavy_user[0], 10, diversity_lambda=0.2)
    assert diverse.diversity_lambda == pytest.approx(0.2)
    assert [it.item_id for it in diverse.items] != pure
    scores = [it.score for it in client.recommend(heavy_user[0], 10, diversity_lambda=1.0).items]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"user_id": "u", "k": 0}, "k"),
    ({"user_id": "u", "k": 201}, "k"),
    ({"user_id": "u", "k": -3}, "k"),
    ({"user_id": "", "k": 10}, "user_id"),
    ({"user_id": "u", "k": 5, "diversity_lambda": 1.5}, "diversity_lambda"),
    ({"user_id": "u", "k": 5, "exclude_item_ids": [""]}, "exclude_item_ids"),
])
def test_bad_requests_are_invalid_argument(cluster, fields, needle):
    with grpc.insecure_channel(cluster.target) as ch:
        from recsys.v1 import recommender_pb2_grpc
        stub = recommender_pb2_grpc.RecommenderStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(pb.RecommendRequest(**fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()


def test_unknown_model_version_is_not_found(client):
    with pytest.raises(grpc.RpcError) as err:
        client.recommend("u1", 5, model_version="no-such-version")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "model_version" in err.value.details()


def test_tiny_deadline_is_honoured(client, heavy_user):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        # explain: always computed (a cached list may legitimately be served within 0.5 ms)
        client.recommend(heavy_user[0], 10, timeout=0.0005, explain=True)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("name", ["feature_svc", "candidate_svc", "ranker_svc"])
def test_health_and_reflection(cluster, name):
    svc = cluster.services[name]
    with grpc.insecure_channel(svc.address) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=2)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "grpc.health.v1.Health" in names
    assert any(n.startswith("recsys.v1.") for n in names)


def test_metrics_are_exposed(cluster, client, heavy_user):
    client.recommend(heavy_user[0], 5)
    port = cluster.services["ranker_svc"].metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Recommend"' in text
    assert "grpc_server_handling_seconds_bucket" in text
    for stage in ("fetch_user", "retrieve", "fetch_items", "featurize", "score", "diversify"):
        assert f'recsys_stage_duration_seconds_count{{stage="{stage}"}}' in text
    cport = cluster.services["candidate_svc"].metrics_port
    ctext = urllib.request.urlopen(f"http://127.0.0.1:{cport}/metrics", timeout=5).read().decode()
    assert 'recsys_candidates_total{source="als"}' in ctext
