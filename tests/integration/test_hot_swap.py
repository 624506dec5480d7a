"""Promotion swaps the served version with zero failed calls; a corrupt bundle is rejected and the old
version keeps serving. The registry's history keeps every version's validation metrics and every change of
champion, and names a corrupt line by file and line."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest

from recsys.bundle import read_metadata
from recsys.client import RecommenderClient
from recsys.cluster import start_cluster
from recsys.registry import Registry

pytestmark = pytest.mark.integration


def copy_as(src: Path, registry: Registry, version: str) -> str:
    """Put a copy of a bundle into the registry under a new version id."""
    dst = registry.path(version)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["version"] = version
    meta["created"] = time.time()
    (dst / "metadata.json").write_text(json.dumps(meta))
    return version


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_promotion_hot_swaps_without_failed_calls(small_bundle, tmp_path):
    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    v1 = copy_as(small_bundle, registry, "v1")
    assert registry.promote(v1).promoted
    v2 = copy_as(small_bundle, registry, "v2")
    bad = copy_as(small_bundle, registry, "v3-corrupt")
    (registry.path(bad) / "ranker" / "model.txt").write_text("not a model")

    with start_cluster(None, port=0, registry=registry.root, reload_interval=0.2, metrics=False,
                       log_dir=tmp_path / "logs") as cluster:
        seen: dict[str, int] = {}
        failures: list[str] = []
        stop = threading.Event()

        def client_loop() -> None:
            with RecommenderClient(cluster.target) as client:
                i = 0
                while not stop.is_set():
                    try:
                        resp = client.recommend(f"u{i % 50}", 10, timeout=5)
                        seen[resp.model_version] = seen.get(resp.model_version, 0) + 1
                        assert len(resp.items) == 10
                    except (grpc.RpcError, AssertionError) as exc:
                        failures.append(repr(exc))
                    i += 1

        threads = [threading.Thread(target=client_loop) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            assert wait_for(lambda: seen.get(v1, 0) > 20)
            decision = registry.promote(v2, tolerance=1.0)
            assert decision.promoted, decision.summary()
            assert wait_for(lambda: seen.get(v2, 0) > 20), seen

            # a corrupt bundle behind the pointer (bypassing the gate): rejected, v2 keeps serving
            (registry.root / "CHAMPION").write_text(bad)
            time.sleep(1.5)
            before = seen.get(v2, 0)
            assert wait_for(lambda: seen.get(v2, 0) > before + 20)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not failures, failures[:3]
        assert bad not in seen
        for name in ("ranker_svc", "candidate_svc", "feature_svc"):  # the checksums catch it everywhere
            log = (cluster.log_dir / f"{name}.log").read_text()
            assert "rejected bundle v3-corrupt" in log and "checksum" in log, name


def test_gate_and_rollback(small_bundle, tmp_path):
    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    a = copy_as(small_bundle, registry, "a")
    first = registry.promote(a)
    assert first.promoted and first.reason == "no comparable champion"
    b = copy_as(small_bundle, registry, "b")
    meta = json.loads((registry.path(b) / "metadata.json").read_text())
    base = meta["metrics"]["valid_ndcg@10"]
    meta["metrics"]["valid_ndcg@10"] = base - 0.05
    (registry.path(b) / "metadata.json").write_text(json.dumps(meta))
    worse = registry.promote(b, tolerance=0.01)
    assert not worse.promoted and "worse by" in worse.reason and registry.champion() == a
    assert "0.0500" in worse.summary() or "worse by 0.05" in worse.summary()
    ok = registry.promote(b, tolerance=0.1)
    assert ok.promoted and registry.champion() == b
    assert registry.rollback() == a and registry.champion() == a
    assert read_metadata(registry.path(registry.champion())).version == "a"
    c = copy_as(small_bundle, registry, "c")
    (registry.path(c) / "retrieval" / "item_factors.npy").write_bytes(b"junk")
    from recsys.bundle import BundleError
    with pytest.raises(BundleError):
        registry.promote(c, force=True)
    assert registry.champion() == a


def test_fresh_registry_waits_not_serving_until_first_promotion(small_bundle, tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from recsys.cluster import free_port

    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    port = free_port()
    seen: dict = {}

    def operator() -> None:
        """While the services wait: check they say NOT_SERVING and refuse calls, then promote."""
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)

                def status():
                    try:
                        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                    except grpc.RpcError:
                        return None

                seen["not_serving"] = wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING)
                live = stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=1).status
                seen["live"] = live == health_pb2.HealthCheckResponse.SERVING  # probes must not restart it
                with RecommenderClient(f"127.0.0.1:{port}") as client:
                    try:
                        client.recommend("u1", 5)
                    except grpc.RpcError as exc:
                        seen["early"] = (exc.code(), exc.details())
        finally:
            copy_as(small_bundle, registry, "first")
            seen["promoted"] = registry.promote("first").promoted

    thread = threading.Thread(target=operator)
    thread.start()
    # started from this (long-lived) thread: the services die with the thread that started them
    with start_cluster(None, port=port, registry=registry.root, reload_interval=0.2, metrics=False,
                       log_dir=tmp_path / "logs", timeout=60) as cluster, RecommenderClient(cluster.target) as client:
        thread.join(timeout=60)
        resp = client.recommend("u1", 5)
    assert seen["not_serving"] and seen["live"] and seen["promoted"]
    # The client watches the ranker's health (recsys/rpc/retry.py): while it is NOT_SERVING the call fails
    # in the channel ("backend unhealthy") or, if it got through first, with the ranker's own "no model".
    assert seen["early"][0] == grpc.StatusCode.UNAVAILABLE
    assert "no model" in seen["early"][1] or "backend unhealthy" in seen["early"][1], seen["early"]
    assert resp.model_version == "first" and len(resp.items) == 5


# -- the registry history: validation metrics per version, changes of champion (`recsys models history`) ----

def _created(registry: Registry, version: str, created: float) -> None:
    path = registry.path(version) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["created"] = created
    path.write_text(json.dumps(meta))


def test_trained_metrics_are_recorded_once_per_version(small_bundle, tmp_path):
    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    a = copy_as(small_bundle, registry, "a")
    meta = read_metadata(registry.path(a))
    assert registry.record_trained(meta) and not registry.record_trained(meta)
    (entry,) = [e for e in registry.history() if e["event"] == "trained"]
    assert entry["version"] == "a" and entry["created"] == meta.created
    assert entry["metrics"]["valid_ndcg@10"] == meta.metrics["valid_ndcg@10"]
    assert all(isinstance(v, float) for v in entry["metrics"].values())
    b = copy_as(small_bundle, registry, "b")  # arrived by copy, without a "trained" line
    assert registry.promote(b, force=True).promoted
    assert registry.promote(b).reason == "already the champion"
    assert [e["version"] for e in registry.history() if e["event"] == "trained"] == ["a", "b"]


def test_timeline_orders_versions_and_marks_every_change_of_champion(small_bundle, tmp_path):
    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    for version, created in (("a", 1000.0), ("untracked", 1500.0), ("b", 2000.0), ("c", 3000.0)):
        copy_as(small_bundle, registry, version)
        _created(registry, version, created)
    meta = json.loads((registry.path("b") / "metadata.json").read_text())
    meta["metrics"]["valid_ndcg@10"] -= 0.05
    (registry.path("b") / "metadata.json").write_text(json.dumps(meta))
    assert registry.promote("a").promoted
    assert not registry.promote("b", tolerance=0.01).promoted  # rejected: no change, but its metrics are kept
    assert registry.promote("c", force=True).promoted
    assert registry.rollback() == "a"
    shutil.rmtree(registry.path("c"))  # a pruned bundle keeps its line
    models, changes = registry.timeline()
    assert [m.version for m in models] == ["a", "untracked", "b", "c"]
    assert [m.recorded for m in models] == [True, False, True, True]
    assert [(c.version, c.before, c.how) for c in changes] == [("a", None, "promote"), ("c", "a", "forced"),
                                                               ("a", "c", "rollback")]
    assert [c.at for c in changes] == sorted(c.at for c in changes)
    by_version = {m.version: m for m in models}
    assert by_version["a"].champion_at == [changes[0].at, changes[2].at]
    assert by_version["c"].champion_at == [changes[1].at] and by_version["b"].champion_at == []
    assert by_version["b"].metrics["valid_ndcg@10"] == pytest.approx(meta["metrics"]["valid_ndcg@10"])
    assert by_version["untracked"].metrics == by_version["a"].metrics  # read from its metadata


@pytest.mark.parametrize(("line", "says"), [("{not json", "not a JSON history entry"),
                                            ('["trained"]', 'must be an object with an "event" field'),
                                            ('{"event": "rollback", "at": 5}', "rollback entry with a missing")])
def test_a_corrupt_history_line_is_named_by_file_and_line(tmp_path, line, says):
    from recsys.bundle import BundleError

    registry = Registry(tmp_path / "models")
    registry.root.mkdir()
    good = json.dumps({"event": "trained", "at": 1, "version": "a", "created": 1, "metrics": {"valid_x": 0.5}})
    (registry.root / "history.jsonl").write_text(f"{good}\n\n{line}\n")
    with pytest.raises(BundleError, match=rf"history\.jsonl:3: .*{re.escape(says)}"):
        registry.timeline()
