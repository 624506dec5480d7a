"""Latency measurement of the Recommend API: a sequential single client and a bounded-concurrency load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc
import numpy as np
from grpc import aio

from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc


def summarize(latencies_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1000.0
    if not len(ms):
        return {"n": 0}
    return {"n": int(len(ms)), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


def p99_change_interval(base: Sequence[float], other: Sequence[float], seed: int = 0,
                        draws: int = 1000) -> tuple[float, float]:
    """A 90% bootstrap interval of the change in p99 from `base` to `other` (percent), each sample resampled
    on its own: the spread that calls alone put on a p99 comparison (not the spread between two processes
    of the same code, which only a twin shows)."""
    rng = np.random.default_rng(seed)
    b = np.percentile(rng.choice(np.asarray(base), (draws, len(base))), 99, axis=1)
    o = np.percentile(rng.choice(np.asarray(other), (draws, len(other))), 99, axis=1)
    lo, hi = np.percentile(100.0 * (o / b - 1), [5, 95])
    return float(lo), float(hi)


def sequential(target: str, users: Sequence[str], k: int = 10, timeout: float = 5.0,
               credentials: grpc.ChannelCredentials | None = None,
               metadata: Sequence[tuple[str, str]] | None = None) -> tuple[list[float], int]:
    """One client, one call at a time (over TLS with `credentials`). Returns latencies (s) and the number of
    failed calls."""
    lat, errors = [], 0
    with (grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)) \
            as channel:
        stub = pb_grpc.RecommenderStub(channel)
        stub.Recommend(pb.RecommendRequest(user_id=users[0], k=k), timeout=timeout, metadata=metadata)  # warm-up
        for u in users:
            t0 = time.perf_counter()
            try:
                stub.Recommend(pb.RecommendRequest(user_id=u, k=k), timeout=timeout, metadata=metadata)
                lat.append(time.perf_counter() - t0)
            except grpc.RpcError:
                errors += 1
    return lat, errors


class RecommendClient:
    """One persistent channel to the ranker for block-wise measurements (the interleaved runs of
    recsys/bench_floor.py): `block` makes one sequential call per user."""

    def __init__(self, target: str, k: int = 10, timeout: float = 5.0,
                 credentials: grpc.ChannelCredentials | None = None):
        self.channel = grpc.insecure_channel(target) if credentials is None else \
            grpc.secure_channel(target, credentials)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.k, self.timeout = k, timeout

    def block(self, users: Sequence[str]) -> tuple[list[float], int, list[bool]]:
        """Latencies (s) of the calls that answered, the failed calls, and whether each answer was cached."""
        lat, errors, cached = [], 0, []
        for u in users:
            t0 = time.perf_counter()
            try:
                resp = self.stub.Recommend(pb.RecommendRequest(user_id=u, k=self.k), timeout=self.timeout)
                lat.append(time.perf_counter() - t0)
                cached.append(resp.cached)
            except grpc.RpcError:
                errors += 1
        return lat, errors, cached

    def close(self) -> None:
        self.channel.close()


async def _load(target: str, users: Sequence[str], k: int, concurrency: int, duration: float,
                max_requests: int, timeout: float) -> tuple[list[float], int, float]:
    lat: list[float] = []
    errors = 0
    sent = 0
    async with aio.insecure_channel(target) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        stop_at = time.perf_counter() + duration

        async def worker(w: int) -> None:
            nonlocal errors, sent
            i = w
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                try:
                    await stub.Recommend(pb.RecommendRequest(user_id=users[i % len(users)], k=k), timeout=timeout)
                    lat.append(time.perf_counter() - t0)
                except grpc.RpcError:
                    errors += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return lat, errors, elapsed


def concurrent(target: str, users: Sequence[str], k: int = 10, concurrency: int = 16, duration: float = 10.0,
               max_requests: int = 100_000, timeout: float = 5.0) -> dict[str, float]:
    """Closed-loop load with `concurrency` calls in flight (bounded: one channel cancels past ~1,000)."""
    concurrency = max(1, min(concurrency, 512))
    lat, errors, elapsed = asyncio.run(_load(target, users, k, concurrency, duration, max_requests, timeout))
    out = summarize(lat)
    out.update({"concurrency": concurrency, "errors": errors, "seconds": elapsed,
                "throughput_rps": len(lat) / elapsed if elapsed > 0 else 0.0})
    return out
