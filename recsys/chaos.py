"""Faults under a steady load, on loopback (issue 11, "chaos"): kill a service or Redis, bring it back
(the cluster's supervisor restarts a service; Redis is restarted on its port and data directory), and
measure failed calls, degraded answers, how long until normal answers resume, and accepted events lost.

The load is one closed-loop client at a fixed rate: a Recommend with a deadline, and a Feedback/Send of
one click per call; an event counts as accepted only when Send said so. After the run, every accepted
event id must be on the stream: that is "events lost"."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import grpc

from recsys.client import interaction
from recsys.cluster import Cluster, wait_healthy
from recsys.events.codec import decode
from recsys.rpc.remote import CHANNEL_OPTIONS
from recsys.rpc.retry import PUBLIC_SERVICES, service_config
from recsys.stream import open_stream
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc


@dataclass
class Call:
    at: float
    code: str       # "OK" or the status code's name
    degraded: bool


@dataclass
class FaultReport:
    fault: str
    calls: int
    failed: int
    degraded: int
    failed_codes: dict[str, int]
    down_s: float               # from the kill until the component served again
    normal_after_s: float       # from the component serving again until the first normal answer
    events_accepted: int
    events_refused: int
    events_lost: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SteadyLoad:
    """Recommend at `rate` per second with a `timeout_s` deadline, plus one click per call through Send,
    from each of `workers` closed-loop clients. `retries`: the clients retry UNAVAILABLE as the Python
    client does (recsys/rpc/retry.py); off, every failed attempt counts."""

    target: str
    users: Sequence[str]
    items: Sequence[str]
    rate: float = 40.0
    timeout_s: float = 1.0
    workers: int = 1
    retries: bool = False
    calls: list[Call] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> SteadyLoad:
        self._threads = [threading.Thread(target=self._run, args=(seed,), daemon=True, name=f"steady-load-{seed}")
                         for seed in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _options(self) -> list[tuple[str, object]]:
        if not self.retries:
            return CHANNEL_OPTIONS
        return [o for o in CHANNEL_OPTIONS if o[0] != "grpc.service_config"] + [
            ("grpc.service_config", service_config(PUBLIC_SERVICES))]

    def _run(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        with grpc.insecure_channel(self.target, options=self._options()) as channel:
            rec, fb = pb_grpc.RecommenderStub(channel), fpb_grpc.FeedbackStub(channel)
            next_at = time.monotonic()
            while not self._stop.is_set():
                user = rng.choice(self.users)
                try:
                    resp = rec.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=self.timeout_s)
                    self.calls.append(Call(time.monotonic(), "OK", bool(resp.degraded)))
                except grpc.RpcError as exc:
                    self.calls.append(Call(time.monotonic(), exc.code().name, False))
                event_id = uuid.uuid4().hex
                try:
                    sent = fb.Send(fpb.SendRequest(events=[interaction(user, rng.choice(self.items), "click",
                                                                       event_id=event_id)]),
                                   timeout=self.timeout_s)
                    if sent.accepted + sent.duplicates == 1:
                        self.accepted.add(event_id)
                except grpc.RpcError:
                    self.refused += 1
                next_at += 1.0 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def kill_service(cluster: Cluster, name: str, hold_s: float) -> tuple[float, Callable[[], float]]:
    """SIGKILL a service; after `hold_s` the supervisor may restart it. Returns the kill time and a
    function that brings it back and returns when it served again."""
    svc = cluster.services[name]
    killed = time.monotonic()
    svc.proc.kill()
    svc.proc.wait(10)

    def back() -> float:
        time.sleep(max(0.0, killed + hold_s - time.monotonic()))
        deadline = time.monotonic() + 30
        while svc.proc.poll() is not None:
            cluster.supervise()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not restarted")
            time.sleep(0.05)
        wait_healthy(svc.address, 120, svc.proc, name)
        return time.monotonic()

    return killed, back


def kill_redis(redis_proc: subprocess.Popen, hold_s: float,
               on_restart: Callable[[subprocess.Popen], None]) -> tuple[float, Callable[[], float]]:
    """SIGKILL redis-server; bring it back on the same command (port, data directory, AOF)."""
    import redis

    cmd = list(redis_proc.args)  # type: ignore[arg-type]
    port = int(cmd[cmd.index("--port") + 1])
    killed = time.monotonic()
    redis_proc.kill()
    redis_proc.wait(10)

    def back() -> float:
        time.sleep(max(0.0, killed + hold_s - time.monotonic()))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        on_restart(proc)
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                return time.monotonic()
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not come back")

    return killed, back


def stream_event_ids(url: str) -> set[str]:
    stream = open_stream(url)
    try:
        ids, after = set(), None
        while True:
            entries = stream.scan(after, 5000)
            if not entries:
                return ids
            for e in entries:
                rec = decode(e.data)
                if rec.WhichOneof("kind") == "event":
                    ids.add(rec.event.event_id)
            after = entries[-1].id
    finally:
        stream.close()


def measure(load: SteadyLoad, fault: str, inject: Callable[[], tuple[float, Callable[[], float]]],
            settle_s: float = 5.0) -> FaultReport:
    """Inject one fault under the running load; wait until answers are normal again (at most settle_s
    after the component is back) and report the window from the kill to then."""
    first = len(load.calls)
    accepted0, refused0 = len(load.accepted), load.refused
    killed, back = inject()
    served = back()
    deadline = served + settle_s
    normal_at = None
    while time.monotonic() < deadline:
        recent = [c for c in load.calls[first:] if c.at > served]
        normal_at = next((c.at for c in recent if c.code == "OK" and not c.degraded), None)
        if normal_at is not None:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # a little of the steady state after recovery
    window = load.calls[first:]
    codes = failed_codes(window)
    return FaultReport(fault, len(window), sum(codes.values()), sum(c.degraded for c in window), codes,
                       round(served - killed, 2), round((normal_at or deadline) - served, 2),
                       len(load.accepted) - accepted0, load.refused - refused0)


def failed_codes(calls: Sequence[Call]) -> dict[str, int]:
    """How many of `calls` failed, by status code."""
    codes: dict[str, int] = {}
    for c in calls:
        if c.code != "OK":
            codes[c.code] = codes.get(c.code, 0) + 1
    return codes


@dataclass
class RollingReport:
    """A rolling restart under load: every replica of each service drained and restarted in turn."""

    calls: int
    failed: int
    degraded: int
    failed_codes: dict[str, int]
    restart_s: dict[str, float]   # per replica, from SIGTERM until it served again
    events_accepted: int
    events_refused: int
    events_lost: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def rolling_restart(cluster: Cluster, load: SteadyLoad, settle_s: float = 2.0,
                    on_event: Callable[[str], None] | None = None) -> RollingReport:
    """Cluster.rolling_restart under the running load; counts every call from the first SIGTERM to the end
    of the last settle."""
    first = len(load.calls)
    accepted0, refused0 = len(load.accepted), load.refused
    restart_s = cluster.rolling_restart(settle_s, on_event)
    window = load.calls[first:]
    codes = failed_codes(window)
    return RollingReport(len(window), sum(codes.values()), sum(c.degraded for c in window), codes, restart_s,
                         len(load.accepted) - accepted0, load.refused - refused0)
