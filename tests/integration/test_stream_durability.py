"""Nothing accepted is lost, nothing is applied twice: a consumer killed mid-batch, a Redis restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from recsys.client import RecommenderClient, interaction
from recsys.events.apply import FeatureApplier
from recsys.events.codec import decode, encode_event, now_ms
from recsys.feature_tables import FeatureTables
from recsys.storage.redis_store import RedisStorage
from recsys.stream import ConsumerLoop, open_stream

from .feedback_helpers import counter, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.redis]

N_USERS, PER_USER = 10, 60

_CONSUMER = textwrap.dedent("""
    import sys, time, threading
    from recsys.events.apply import FeatureApplier
    from recsys.storage.redis_store import RedisStorage
    from recsys.stream import ConsumerLoop, open_stream

    url = sys.argv[1]
    storage = RedisStorage(url, namespace="durability")
    apply = FeatureApplier(storage, "features@durability")

    def slow(entries):  # one event at a time, slowly: the kill lands in the middle of a batch
        for e in entries:
            apply([e])
            time.sleep(0.01)

    loop = ConsumerLoop(open_stream(url + "?key=durability:events"), "features@durability", "doomed", slow,
                        batch=50)
    loop.run(threading.Event())
""")


def _tables() -> FeatureTables:
    return FeatureTables(user_ids=[], user_feature_names=["user_n_interactions"], user_values=np.zeros((0, 1)),
                         user_history=[], user_attributes=[], item_ids=["i0"], item_feature_names=[],
                         item_values=np.zeros((1, 0)), item_categories=[[]], item_titles=[""])


def test_a_consumer_killed_mid_batch_leaves_counters_equal_to_distinct_events(redis_url: str) -> None:
    stream = open_stream(redis_url + "?key=durability:events")
    storage = RedisStorage(redis_url, namespace="durability")
    storage.load(_tables())
    stream.ensure_group("features@durability", "begin")
    at = now_ms()
    events = [interaction(f"u{u}", f"i{k}", "view", event_id=f"e-{u}-{k}") for u in range(N_USERS)
              for k in range(PER_USER)]
    for start in range(0, len(events), 100):
        stream.append([(ev.event_id, encode_event(ev, at)) for ev in events[start:start + 100]])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", _CONSUMER, redis_url], env=env)
    try:
        total = lambda: sum(_count(storage, f"u{u}") for u in range(N_USERS))  # noqa: E731
        wait_for(lambda: total() >= 80, 60, "the doomed consumer applying some events")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = sum(_count(storage, f"u{u}") for u in range(N_USERS))
    assert 0 < partial < len(events)
    # a survivor claims the dead consumer's pending entries (some half-applied) and finishes the stream
    survivor = ConsumerLoop(stream, "features@durability", "survivor", FeatureApplier(storage, "features@durability"),
                            batch=50, claim_idle_s=0.2)
    deadline = time.monotonic() + 60
    while stream.lag("features@durability") and time.monotonic() < deadline:
        time.sleep(0.05)
        survivor.poll_once()
    assert stream.lag("features@durability") == 0
    for u in range(N_USERS):
        assert _count(storage, f"u{u}") == PER_USER
    stream.close()
    storage.close()


def _count(storage: RedisStorage, user: str) -> float:
    rec = storage.get_users([user])[0]
    return float(rec.values[0]) if rec is not None else 0.0


@pytest.fixture
def durable_redis(tmp_path: Path):
    """A redis-server that fsyncs every write (appendfsync always), as production must run it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    from tests.conftest import _redis_answers, free_port

    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
           "--appendfsync", "always", "--dir", str(tmp_path)]

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _redis_answers(port), 10, "redis-server starting")
        return proc

    state = {"proc": start()}

    def restart() -> None:
        state["proc"].send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
        state["proc"].wait()
        time.sleep(0.3)
        state["proc"] = start()

    yield f"redis://127.0.0.1:{port}/0", restart
    state["proc"].kill()
    state["proc"].wait()


def test_a_redis_restart_loses_no_accepted_event(durable_redis, small_bundle, tmp_path):
    from recsys.cluster import start_cluster

    url, restart = durable_redis
    stream_url = url + "?key=restart:events"
    accepted: list[str] = []
    refused = 0
    with start_cluster(small_bundle, port=0, metrics=False, log_dir=tmp_path / "logs", stream=stream_url) as c, \
            RecommenderClient(c.target) as client:
        stop = threading.Event()

        def produce() -> None:
            nonlocal refused
            k = 0
            while not stop.is_set():
                batch = [interaction("restart-user", f"r{k}-{j}", "view", event_id=f"rs-{k}-{j}") for j in range(5)]
                k += 1
                try:
                    resp = client.send(batch, timeout=2)
                    accepted.extend(ev.event_id for ev in batch[:resp.accepted])
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    refused += 1
                time.sleep(0.01)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(1.0)
        restart()
        time.sleep(1.5)
        stop.set()
        producer.join()
        assert accepted
        stream = open_stream(stream_url)
        stored, position = set(), None
        while batch := stream.scan(position, 1000):
            stored |= {decode(e.data).event.event_id for e in batch if decode(e.data).WhichOneof("kind") == "event"}
            position = batch[-1].id
        stream.close()
        assert set(accepted) <= stored, f"{len(set(accepted) - stored)} accepted events were lost"
        # and the features consumer applies every one of them exactly once
        expected = len(set(accepted) | stored)
        try:
            wait_for(lambda: counter(c, "restart-user") == expected, 20, "every event applied")
        except AssertionError:
            import redis as redis_py

            r = redis_py.Redis.from_url(url)
            groups = r.xinfo_groups("restart:events")
            pend = {g["name"].decode(): r.xpending("restart:events", g["name"]) for g in groups}
            dead = r.xlen("restart:events:dead") if r.exists("restart:events:dead") else 0
            logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").glob("feature_svc*")))
            raise AssertionError(f"applied {counter(c, 'restart-user')} of {expected} events; groups {groups}; "
                                 f"pending {pend}; dead letters {dead}; feature_svc's log ends:\n{logs}") from None
