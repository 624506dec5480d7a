"""The feedback loop's part of `make bench`: events accepted per second through Feedback/Send,
event-to-visible latency, cache hit and miss latency at the client, and Recommend latency while
events stream in (all on loopback, bounded in count and time)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio

from recsys.client import interaction
from recsys.latency import p99_change_interval, summarize
from recsys.v1 import features_pb2, features_pb2_grpc
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc


def _events(users: Sequence[str], items: Sequence[str], n: int, tag: str) -> list[fpb.FeedbackEvent]:
    return [interaction(users[k % len(users)], items[(k * 7919) % len(items)], "view", event_id=f"{tag}-{k}")
            for k in range(n)]


def ingestion(target: str, users: Sequence[str], items: Sequence[str], batch: int, duration: float = 5.0,
              concurrency: int = 8) -> dict[str, float]:
    """Closed-loop Send calls of `batch` events, `concurrency` in flight, for `duration` seconds."""
    tag = uuid.uuid4().hex[:8]
    pool = _events(users, items, 4096, tag)

    async def run() -> tuple[int, int, list[float], float]:
        accepted = errors = 0
        lat: list[float] = []
        counter = itertools.count()
        async with aio.insecure_channel(target) as ch:
            stub = fpb_grpc.FeedbackStub(ch)
            stop_at = time.perf_counter() + duration

            async def worker() -> None:
                nonlocal accepted, errors
                while time.perf_counter() < stop_at:
                    n = next(counter)
                    evs = []
                    for j in range(batch):
                        ev = fpb.FeedbackEvent()
                        ev.CopyFrom(pool[(n * batch + j) % len(pool)])
                        ev.event_id = f"{tag}-{n}-{j}"
                        evs.append(ev)
                    t0 = time.perf_counter()
                    try:
                        resp = await stub.Send(fpb.SendRequest(events=evs), timeout=10)
                        accepted += resp.accepted
                        lat.append(time.perf_counter() - t0)
                    except grpc.RpcError:
                        errors += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return accepted, errors, lat, time.perf_counter() - t0

    accepted, errors, lat, elapsed = asyncio.run(run())
    return {"batch": batch, "concurrency": concurrency, "events_per_s": accepted / elapsed, "errors": errors,
            "send_p50_ms": summarize(lat).get("p50_ms", float("nan")),
            "send_p99_ms": summarize(lat).get("p99_ms", float("nan"))}


def visibility(target: str, feature_addr: str, users: Sequence[str], n: int = 200,
               timeout: float = 5.0) -> dict[str, float]:
    """Seconds from Send returning to the click being in the user's history at feature_svc, one at a time."""
    lat: list[float] = []
    missing = 0
    with grpc.insecure_channel(target) as ch, grpc.insecure_channel(feature_addr) as fch:
        send = fpb_grpc.FeedbackStub(ch).Send
        read = features_pb2_grpc.FeatureStoreStub(fch).GetUserFeatures
        for k in range(n):
            user, item = users[k % len(users)], f"visible-{uuid.uuid4().hex[:10]}"
            send(fpb.SendRequest(events=[interaction(user, item, "click")]), timeout=5)
            t0 = time.perf_counter()
            while True:
                rec = read(features_pb2.GetUserFeaturesRequest(user_ids=[user], history_limit=1), timeout=5).users[0]
                if rec.history and rec.history[-1] == item:
                    lat.append(time.perf_counter() - t0)
                    break
                if time.perf_counter() - t0 > timeout:
                    missing += 1
                    break
                time.sleep(0.001)
    return summarize(lat) | {"not_visible": missing}


def cache_latency(target: str, users: Sequence[str], k: int = 10) -> dict[str, dict[str, float]]:
    """Each user twice: the first call misses (computes and caches), the second hits right after, in the
    wake of its own miss (the other services may still be finishing that miss's work); then a health check
    on the same channel: a call that does nothing, the floor any hit stands on. Then every user once more,
    in a pass of its own: hits that no miss precedes ("hit_pass"), with the floor measured beside them."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    miss, hit, noop, cached = [], [], [], 0
    again, again_noop, again_cached = [], [], 0
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        stub.Recommend(pb.RecommendRequest(user_id=users[0], k=k), timeout=5)
        for u in users[1:]:
            for bucket in (miss, hit):
                t0 = time.perf_counter()
                resp = stub.Recommend(pb.RecommendRequest(user_id=u, k=k), timeout=5)
                bucket.append(time.perf_counter() - t0)
                cached += int(bucket is hit and resp.cached)
            t0 = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            noop.append(time.perf_counter() - t0)
        for u in users[1:]:
            t0 = time.perf_counter()
            resp = stub.Recommend(pb.RecommendRequest(user_id=u, k=k), timeout=5)
            again.append(time.perf_counter() - t0)
            again_cached += int(resp.cached)
            t0 = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            again_noop.append(time.perf_counter() - t0)
    return {"miss": summarize(miss), "hit": summarize(hit) | {"hit_ratio": cached / max(1, len(hit))},
            "noop": summarize(noop), "hit_pass": summarize(again) | {"hit_ratio": again_cached / max(1, len(again))},
            "noop_pass": summarize(again_noop)}


def _send_at_rate(target: str, control_url: str, users: Sequence[str], items: Sequence[str], rate: Any,
                  control: Any, sent: Any, stop: Any) -> None:
    """In a process of its own, so the sender's CPU never shows up as the measuring client's latency: batches
    of 100 fresh events at `rate.value` events/s (0: idle) until `stop` is set, through Feedback/Send, or
    while `control.value` is set appended straight to the stream at `control_url`, which no service reads.
    One process for all windows, so switching between them costs no process start and the windows can be
    short and many. In the background (recsys.child_process.background_priority): it stands for producers
    on other machines (the span collector of recsys/bench_tracing.py runs so for the same reason)."""
    from recsys.child_process import background_priority
    from recsys.events.codec import encode_event, now_ms
    from recsys.stream import open_stream

    background_priority()
    tag = uuid.uuid4().hex[:8]
    with grpc.insecure_channel(target) as ch, open_stream(control_url) as unread:
        send = fpb_grpc.FeedbackStub(ch).Send
        b, next_at = 0, time.perf_counter()
        while not stop.is_set():
            now, r = time.perf_counter(), rate.value
            if r <= 0:
                next_at = now
                time.sleep(0.002)
                continue
            if next_at > now:
                time.sleep(min(next_at - now, 0.01))
                continue
            batch = _events(users, items, 100, f"{tag}-{b}")
            b += 1
            if control.value:
                at = now_ms()
                unread.append([(ev.event_id, encode_event(ev, at, "bench-control")) for ev in batch])
            else:
                with contextlib.suppress(grpc.RpcError):
                    send(fpb.SendRequest(events=batch), timeout=5)
            sent.value += len(batch)
            next_at = max(next_at + 100 / r, now - 0.2)  # after a stall, catch up for at most 0.2 s


def interleaved(target: str, stream: str, users: Sequence[str], items: Sequence[str], rates: Sequence[float],
                rounds: int = 8, n: int = 100, settle_s: float = 0.5,
                event_users: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Sequential Recommend (distinct users, so cache misses) in short windows, quiet and at each event rate
    in turn (the order rotating every round), while one sender process streams batches of 100 at the
    window's rate; each condition's latencies pooled. The machine's drift over a minute (large on a shared
    VM: a third between two windows of the same code) lands on every condition alike. Each window starts
    `settle_s` after the rate changed, so the consumers are at their steady state (or drained).

    Every rate also runs as a control: the same batches appended to a sibling of `stream` that no service
    reads. On 2 shared cores any background work moves the tail (a process 5% busy at the lowest priority
    raised p99 by ~10% here), so "unchanged" has two readings: against quiet (everything, the sender and
    Redis included) and against the control (what the services' own writes cost their reads). Each p99
    change comes with a 90% bootstrap interval.

    The events name `event_users` (default: the measured users themselves). Events for the measured users
    grow their histories, and a longer history costs every later Recommend more whether or not a write is
    under way: that is a change in the data, not writes stalling reads, and it would land on the quiet
    windows that follow as well."""
    from recsys.stream import topic_url

    users = list(users)
    conditions = [(0.0, False)] + [(r, c) for r in rates if r > 0 for c in (False, True)]
    n = max(1, min(n, len(users) // (rounds * len(conditions))))  # every window its own users
    ctx = multiprocessing.get_context("spawn")
    rate_v, control, sent, stop = ctx.Value("d", 0.0), ctx.Value("b", 0), ctx.Value("l", 0), ctx.Event()
    proc = ctx.Process(target=_send_at_rate, daemon=True,
                       args=(target, topic_url(stream, "bench-control"), list(event_users or users), list(items),
                             rate_v, control, sent, stop))
    proc.start()
    pooled: dict[tuple[float, bool], list[float]] = {c: [] for c in conditions}
    seen: dict[tuple[float, bool], list[float]] = {c: [] for c in conditions}
    try:
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            stub.Recommend(pb.RecommendRequest(user_id=users[-1], k=10), timeout=5)
            w = 0
            for r in range(rounds):
                k = r % len(conditions)
                for cond in [*conditions[k:], *conditions[:k]]:
                    rate_v.value, control.value = cond[0], int(cond[1])
                    time.sleep(settle_s)
                    s0, t_start = sent.value, time.perf_counter()
                    for u in users[w * n:(w + 1) * n]:
                        t0 = time.perf_counter()
                        stub.Recommend(pb.RecommendRequest(user_id=u, k=10, diversity_lambda=0.79), timeout=5)
                        pooled[cond].append(time.perf_counter() - t0)
                    seen[cond].append((sent.value - s0) / (time.perf_counter() - t_start))
                    w += 1
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    summary = {cond: summarize(pooled[cond]) for cond in conditions}
    out: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        rate, is_control = cond
        row: dict[str, Any] = summary[cond] | {
            "events_per_s_sent": sum(seen[cond]) / len(seen[cond]), "windows": rounds}
        against = [("", conditions[0])] if rate else []
        if rate and not is_control:
            against.append(("_vs_control", (rate, True)))
        for suffix, base in against:
            row[f"p99_change{suffix}_pct"] = 100.0 * (row["p99_ms"] / summary[base]["p99_ms"] - 1)
            row[f"p99_change{suffix}_ci_pct"] = p99_change_interval(pooled[base], pooled[cond])
        name = "quiet" if not rate else f"{rate:.0f} events/s" + (" to an unread stream (control)" if is_control
                                                                   else "")
        out[name] = row
    return out


def start_redis(workdir: str) -> tuple[object, str] | None:
    """A throwaway redis-server that fsyncs every write (the durability production needs), or None."""
    import shutil
    import subprocess

    from recsys.cluster import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                             "--appendfsync", "always", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    return None


def exposure_cost(target: str, users: Sequence[str], k: int = 10) -> dict[str, dict[str, float]]:
    """Recommend latency with the exposure log on, then off (the warm-up flag skips the enqueue), over
    distinct users so both phases compute (cache misses)."""
    from recsys.client import WARMUP_METADATA

    half = len(users) // 2
    out = {}
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        for name, group, metadata in (("on", users[:half], None), ("off", users[half:], (WARMUP_METADATA,))):
            lat = []
            for u in group:
                t0 = time.perf_counter()
                stub.Recommend(pb.RecommendRequest(user_id=u, k=k, diversity_lambda=0.81), timeout=5,
                               metadata=metadata)
                lat.append(time.perf_counter() - t0)
            out[name] = summarize(lat)
    return out
