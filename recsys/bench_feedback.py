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
from recsys.latency import summarize
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


def _send_at_rate(target: str, users: Sequence[str], items: Sequence[str], rate: float, seconds: float,
                  sent: Any) -> None:
    """In a process of its own, so the sender's CPU never shows up as the measuring client's latency."""
    tag = uuid.uuid4().hex[:8]
    batches = [_events(users, items, 100, f"{tag}-{b}") for b in range(int(rate * seconds / 100) + 1)]
    with grpc.insecure_channel(target) as ch:
        send = fpb_grpc.FeedbackStub(ch).Send
        t0 = time.perf_counter()
        for b, batch in enumerate(batches):
            wait = t0 + b * 100 / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            with contextlib.suppress(grpc.RpcError):
                send(fpb.SendRequest(events=batch), timeout=5)
            sent.value += len(batch)
            if time.perf_counter() - t0 > seconds:
                break


def recommend_while_ingesting(target: str, users: Sequence[str], items: Sequence[str], rate: float,
                              n: int = 500, k: int = 10) -> dict[str, Any]:
    """Sequential Recommend (distinct users, so cache misses) while another process sends `rate` events/s
    in batches of 100; the latencies themselves under "latencies_s" (for pooling windows)."""
    ctx = multiprocessing.get_context("spawn")
    sent = ctx.Value("l", 0)
    proc = None
    if rate > 0:
        proc = ctx.Process(target=_send_at_rate, args=(target, list(users), list(items), rate, 120.0, sent),
                           daemon=True)
        proc.start()
        time.sleep(2.0)  # the sender is up and at its rate before the measurement starts
    lat: list[float] = []
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        start_sent, t_start = sent.value, time.perf_counter()
        for u in users[:n]:
            t0 = time.perf_counter()
            stub.Recommend(pb.RecommendRequest(user_id=u, k=k, diversity_lambda=0.79), timeout=5)
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - t_start
        rate_seen = (sent.value - start_sent) / elapsed
    if proc is not None:
        proc.terminate()
        proc.join()
    return summarize(lat) | {"events_per_s_sent": rate_seen, "latencies_s": lat}


def interleaved(target: str, users: Sequence[str], items: Sequence[str], rates: Sequence[float], rounds: int = 3,
                n: int = 200) -> dict[str, dict[str, float]]:
    """Quiet and ingesting windows in turn, `rounds` times, each condition's latencies pooled: the machine's
    drift over a minute (it is large on a shared VM) lands on every condition alike."""
    pooled: dict[float, list[float]] = {r: [] for r in rates}
    sent: dict[float, list[float]] = {r: [] for r in rates}
    users = list(users)
    for i, rate in enumerate(r for _ in range(rounds) for r in rates):
        run = recommend_while_ingesting(target, users[i * n:(i + 1) * n], items, rate=rate, n=n)
        pooled[rate] += run["latencies_s"]
        sent[rate].append(run["events_per_s_sent"])
    return {("quiet" if r == 0 else f"{r:.0f} events/s"): summarize(pooled[r]) | {
        "events_per_s_sent": sum(sent[r]) / len(sent[r])} for r in rates}


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
