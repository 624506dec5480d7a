"""Events update what Recommend sees; the ranker holds several model versions; `recsys up` lifecycle."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import pytest

from recsys.client import RecommenderClient
from recsys.cluster import free_port, start_cluster, wait_healthy
from recsys.v1 import features_pb2, features_pb2_grpc

pytestmark = pytest.mark.integration


def test_recorded_events_reach_recommend(cluster, small_dataset):
    items = small_dataset.interactions["item_id"].value_counts().index[:3].tolist()
    user = "fresh-user-with-events"
    with RecommenderClient(cluster.target) as client:
        assert client.recommend(user, 5).cold_start
        with grpc.insecure_channel(cluster.services["feature_svc"].address) as ch:
            stub = features_pb2_grpc.FeatureStoreStub(ch)
            events = [features_pb2.Event(user_id=user, item_id=i, event="purchase") for i in items]
            assert stub.RecordEvents(features_pb2.RecordEventsRequest(events=events), timeout=5).recorded == 3
            with pytest.raises(grpc.RpcError) as err:
                stub.RecordEvents(features_pb2.RecordEventsRequest(events=[features_pb2.Event(user_id="u")]),
                                  timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "item_id" in err.value.details()
        resp = client.recommend(user, 10)
        assert not resp.cold_start
        assert not set(items) & {it.item_id for it in resp.items}
        assert any({"als", "i2i"} & set(it.sources) for it in resp.items)


def test_two_model_versions_side_by_side(small_bundle, small_dataset, tmp_path):
    from recsys.bundle import read_metadata
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    cfg = small_train_config()
    cfg.seed = 7
    second = tmp_path / "second"
    train(small_dataset, second, cfg, show_progress=False)
    v1, v2 = read_metadata(small_bundle).version, read_metadata(second).version
    with start_cluster([small_bundle, second], port=0, metrics=False, log_dir=tmp_path / "logs") as c, \
            RecommenderClient(c.target) as client:
        assert client.recommend("u1", 5).model_version == v1  # the first bundle is the default
        assert client.recommend("u1", 5, model_version=v2).model_version == v2


def test_recsys_up_starts_and_stops_everything(small_bundle, tmp_path):
    port = free_port()
    # run where the default event stream (./recsys-data/events) may be created
    proc = subprocess.Popen([sys.executable, "-m", "recsys.cli", "up", "--bundle", str(small_bundle),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    try:
        wait_healthy(f"127.0.0.1:{port}", 120, proc, "recsys up")
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            assert len(client.recommend("u1", 3).items) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out
    time.sleep(0.5)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(ch).result(timeout=1)


def test_seen_items_excluded_beyond_the_history_window(small_bundle, small_dataset, tmp_path):
    """Only the last history_window items drive retrieval, but every seen item stays excluded."""
    inter = small_dataset.interactions
    user = str(inter["user_id"].value_counts().index[0])
    seen = set(inter.loc[inter["user_id"] == user, "item_id"])
    assert len(seen) > 20
    with start_cluster(small_bundle, port=0, metrics=False, log_dir=tmp_path,
                       extra={"ranker_svc": ["--history-window", "5"]}) as c, RecommenderClient(c.target) as client:
        resp = client.recommend(user, 100, diversity_lambda=1.0)
        assert len(resp.items) == 100
        assert not {it.item_id for it in resp.items} & seen


def test_services_do_not_outlive_a_killed_parent(small_bundle):
    import os

    script = ("import os, sys; from pathlib import Path; from recsys.cluster import start_cluster; "
              "c = start_cluster(Path(sys.argv[1]), port=0, metrics=False); "
              "print(' '.join(str(s.proc.pid) for s in c.services.values()), flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", script, str(small_bundle)], capture_output=True, text=True,
                         timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 3, out.stderr

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_events_survive_a_restart_of_recsys_up(small_bundle, small_dataset, tmp_path):
    """The embedded log is on disk: what Send accepted before a restart is applied again after it."""
    from recsys.client import interaction

    item = str(small_dataset.interactions["item_id"].iloc[0])

    def up() -> tuple[subprocess.Popen, int]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "recsys.cli", "up", "--bundle", str(small_bundle),
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp_path)
        wait_healthy(f"127.0.0.1:{port}", 120, proc, "recsys up")
        return proc, port

    def down(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)

    proc, port = up()
    try:
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            assert client.recommend("restarted-user", 5).cold_start
            assert client.send([interaction("restarted-user", item, "purchase", event_id="survives")]).accepted == 1
    finally:
        down(proc)
    assert (tmp_path / "recsys-data" / "events").is_dir()
    proc, port = up()
    try:
        with RecommenderClient(f"127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 10
            while client.recommend("restarted-user", 5).cold_start and time.monotonic() < deadline:
                time.sleep(0.1)
            resp = client.recommend("restarted-user", 5)
            assert not resp.cold_start and item not in {it.item_id for it in resp.items}
            assert client.send([interaction("restarted-user", item, "purchase", event_id="survives")]).duplicates == 1
    finally:
        down(proc)
