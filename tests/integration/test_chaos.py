"""Chaos under a steady load (recsys/chaos.py), on loopback with Redis behind the feature store and the
event stream: each of feature_svc, candidate_svc and Redis is killed for 2 s and brought back. Every
Recommend in the window still answers (degraded while the fault lasts), normal answers resume within
5 s of the component serving again, and no accepted event is lost. Killing the ranker itself (one
replica) fails the calls of its outage, and still loses no accepted event."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from recsys.bench_feedback import start_redis
from recsys.chaos import SteadyLoad, kill_redis, kill_service, measure, stream_event_ids
from recsys.cluster import start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture(scope="module")
def redis_cluster(small_bundle, small_dataset, tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    workdir = tempfile.mkdtemp(prefix="recsys-chaos-redis-")
    redis = {"proc": None}
    started = start_redis(workdir)
    assert started is not None
    redis["proc"], url = started
    stream = url + "?key=chaos:events"
    logs = tmp_path_factory.mktemp("chaos-logs")
    try:
        with start_cluster(small_bundle, port=0, storage=url, stream=stream, log_dir=logs) as cluster:
            users = [str(u) for u in small_dataset.interactions["user_id"].unique()[:200]]
            items = [str(i) for i in small_dataset.interactions["item_id"].unique()[:200]]
            load = SteadyLoad(cluster.target, users, items, rate=30).start()
            try:
                yield cluster, load, redis, stream
            finally:
                load.stop()
    finally:
        if redis["proc"] is not None:
            redis["proc"].kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _accepted(load: SteadyLoad) -> set[str]:
    """A snapshot taken before the stream is read: the load keeps adding ids while it runs."""
    return set(load.accepted)


@pytest.mark.parametrize("name", ["feature_svc", "candidate_svc"])
def test_a_killed_dependency_degrades_answers_and_they_recover(redis_cluster, name) -> None:
    cluster, load, _, stream = redis_cluster
    report = measure(load, name, lambda: kill_service(cluster, name, hold_s=2.0))
    print(report.as_dict())
    assert report.failed == 0, report
    assert report.degraded > 0 and report.normal_after_s < 5.0, report
    assert not _accepted(load) - stream_event_ids(stream)  # nothing accepted was lost


def test_a_redis_restart_loses_no_accepted_event(redis_cluster) -> None:
    cluster, load, redis, stream = redis_cluster
    report = measure(load, "redis", lambda: kill_redis(redis["proc"], 2.0, lambda p: redis.update(proc=p)))
    print(report.as_dict())
    assert report.failed == 0, report
    assert report.normal_after_s < 5.0, report
    assert report.events_refused > 0  # Send refused what it could not persist while Redis was down ...
    assert not _accepted(load) - stream_event_ids(stream)  # ... and lost nothing it accepted


def test_a_killed_ranker_fails_only_its_outage_and_loses_nothing(redis_cluster) -> None:
    cluster, load, _, stream = redis_cluster
    report = measure(load, "ranker_svc", lambda: kill_service(cluster, "ranker_svc", hold_s=1.0))
    print(report.as_dict())
    assert report.normal_after_s < 5.0, report
    assert set(report.failed_codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, report
    assert not _accepted(load) - stream_event_ids(stream)


def _health(address: str) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status


def test_the_feature_store_reports_not_serving_while_its_redis_is_down(redis_cluster) -> None:
    import time

    from grpc_health.v1 import health_pb2

    cluster, _, redis, _ = redis_cluster
    address = cluster.services["feature_svc"].address
    assert _health(address) == health_pb2.HealthCheckResponse.SERVING
    _, back = kill_redis(redis["proc"], 0.0, lambda p: redis.update(proc=p))
    deadline = time.monotonic() + 5
    while _health(address) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "still SERVING with its storage down"
        time.sleep(0.1)
    back()
    deadline = time.monotonic() + 5
    while _health(address) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "not SERVING again after its storage came back"
        time.sleep(0.1)
