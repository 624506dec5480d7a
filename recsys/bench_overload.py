"""The overload curve (`make bench`): how Recommend behaves beyond its capacity.

First the saturating load: closed-loop callers at growing concurrency until the answers per second stop
growing. Then open-loop load (calls sent at a fixed rate, whatever the answers, as independent callers
do) at multiples of that rate: per point, the offered and admitted (OK) rates, the shed calls
(RESOURCE_EXHAUSTED), the calls that failed otherwise, and the p50/p99 of the admitted calls. A server that
sheds keeps the admitted p99 bounded past saturation; one that queues lets it grow with the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import grpc
import numpy as np
from grpc import aio

from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

MAX_OUTSTANDING = 800  # one gRPC channel cancels calls beyond about 1,000 in flight: the generator stays below
CHANNELS = 4


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if len(values) else float("nan")


@dataclass
class LoadPoint:
    offered_rps: float
    seconds: float
    sent: int = 0
    ok: int = 0
    shed: int = 0                 # RESOURCE_EXHAUSTED
    deadline: int = 0             # DEADLINE_EXCEEDED
    other: int = 0                # any other status
    not_sent: int = 0             # the generator's own bound (MAX_OUTSTANDING) reached
    ok_latency: list[float] = field(default_factory=list, repr=False)
    shed_latency: list[float] = field(default_factory=list, repr=False)

    @property
    def admitted_rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if not k.endswith("_latency")}
        out.update(admitted_rps=self.admitted_rps, shed_rps=self.shed / self.seconds if self.seconds else 0.0,
                   p50_ms=_pct(self.ok_latency, 50), p99_ms=_pct(self.ok_latency, 99),
                   shed_p50_ms=_pct(self.shed_latency, 50), shed_p99_ms=_pct(self.shed_latency, 99))
        return out


class _Load:
    """A few channels to the ranker and the calls' outcomes."""

    def __init__(self, target: str, users: Sequence[str], k: int, timeout_s: float):
        self.channels = [aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(CHANNELS)]
        self.stubs = [pb_grpc.RecommenderStub(ch) for ch in self.channels]
        self.users, self.k, self.timeout = list(users), k, timeout_s
        self.n = 0

    async def call(self, point: LoadPoint) -> None:
        i = self.n
        self.n += 1
        point.sent += 1
        t0 = time.perf_counter()
        try:
            await self.stubs[i % CHANNELS].Recommend(pb.RecommendRequest(user_id=self.users[i % len(self.users)],
                                                                         k=self.k), timeout=self.timeout)
            point.ok += 1
            point.ok_latency.append(time.perf_counter() - t0)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                point.shed += 1
                point.shed_latency.append(time.perf_counter() - t0)
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                point.deadline += 1
            else:
                point.other += 1

    async def closed(self, concurrency: int, duration_s: float) -> LoadPoint:
        point = LoadPoint(0.0, duration_s)
        stop = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop:
                await self.call(point)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        point.seconds = time.perf_counter() - t0
        point.offered_rps = point.sent / point.seconds
        return point

    async def open(self, rate: float, duration_s: float) -> LoadPoint:
        """Calls started at `rate` per second for `duration_s`, each on its own (no waiting for answers)."""
        point = LoadPoint(rate, duration_s)
        pending: set[asyncio.Task] = set()
        t0 = time.perf_counter()
        total = int(rate * duration_s)
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) >= MAX_OUTSTANDING:
                point.not_sent += 1
                continue
            task = asyncio.create_task(self.call(point))
            pending.add(task)
            task.add_done_callback(pending.discard)
        point.seconds = time.perf_counter() - t0
        if pending:
            await asyncio.wait(pending)
        return point

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels))


async def _saturation(load: _Load, duration_s: float, max_concurrency: int) -> tuple[float, int, list[dict]]:
    """Closed-loop throughput at 1, 2, 4, ... callers until it grows by less than 10%."""
    best, best_c, steps, c = 0.0, 1, [], 1
    while c <= max_concurrency:
        point = await load.closed(c, duration_s)
        steps.append({"concurrency": c, **point.summary()})
        if point.admitted_rps < best * 1.1:
            break
        best, best_c = max(best, point.admitted_rps), c
        c *= 2
    return best, best_c, steps


async def _curve(target: str, users: Sequence[str], multiples: Sequence[float], duration_s: float,
                 timeout_s: float, k: int, max_concurrency: int) -> dict:
    load = _Load(target, users, k, timeout_s)
    try:
        await load.closed(4, min(1.0, duration_s))  # warm the connections and the caches of the services
        saturating_rps, concurrency, steps = await _saturation(load, min(2.0, duration_s), max_concurrency)
        points = []
        for m in multiples:
            point = await load.open(max(1.0, m * saturating_rps), duration_s)
            points.append({"multiple": m, **point.summary()})
            await asyncio.sleep(0.5)  # let the server drain before the next point
    finally:
        await load.close()
    return {"saturating_rps": saturating_rps, "saturating_concurrency": concurrency, "saturation": steps,
            "timeout_s": timeout_s, "points": points}


def overload_curve(target: str, users: Sequence[str], multiples: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0),
                   duration_s: float = 3.0, timeout_s: float = 1.0, k: int = 10,
                   max_concurrency: int = 128) -> dict:
    """The saturating rate of the ranker at `target`, then one open-loop point per multiple of it:
    {"saturating_rps", "saturating_concurrency", "saturation": [...], "points": [{"multiple",
    "offered_rps", "admitted_rps", "shed_rps", "p50_ms", "p99_ms", "shed_p99_ms", ...}, ...]}."""
    return asyncio.run(_curve(target, users, multiples, duration_s, timeout_s, k, max_concurrency))


def overload_table(curve: dict) -> list[list[str]]:
    """Rows for a report: offered/s, admitted/s, shed/s, failed, p50 and p99 of the admitted calls (ms)."""
    rows = []
    for p in curve["points"]:
        rows.append([f"{p['multiple']:.1f}x", f"{p['offered_rps']:.0f}", f"{p['admitted_rps']:.0f}",
                     f"{p['shed_rps']:.0f}", str(p["deadline"] + p["other"]), f"{p['p50_ms']:.1f}",
                     f"{p['p99_ms']:.1f}", f"{p['shed_p99_ms']:.1f}"])
    return rows
