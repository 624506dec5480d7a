"""The bench's throughput figures (issue 13 point 1): closed-loop throughput at bounded concurrency, and
the highest offered rate the cluster holds with p99 ≤ a bound (50 ms).

The rate search is open loop (calls start on a schedule whatever the answers, as independent callers
send them; recsys/bench_overload.py's generator, a few channels, never more than MAX_OUTSTANDING in
flight since one grpc.aio channel cancels beyond about 1,000). A rate is held when nearly every call was
sent and answered OK and the answered calls' p99 is within the bound. It grows by a factor from the
closed-loop throughput's half until a rate fails, then bisects between the last held and the failed one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from recsys.bench_overload import _Load


def _held(point: dict, p99_ms: float) -> bool:
    complete = point["ok"] >= 0.99 * max(1, point["sent"] + point["not_sent"])
    return complete and point["p99_ms"] <= p99_ms


async def _search(target: str, users: Sequence[str], start_rps: float, p99_ms: float, duration_s: float,
                  k: int, growth: float, bisections: int, max_rps: float) -> dict:
    load = _Load(target, users, k, timeout_s=1.0)
    points: list[dict] = []

    async def probe(rate: float) -> bool:
        point = (await load.open(rate, duration_s)).summary()
        ok = _held(point, p99_ms)
        points.append(point | {"held": ok})
        await asyncio.sleep(0.5)  # let the server drain before the next rate
        return ok

    try:
        await load.closed(4, min(1.0, duration_s))  # warm the connections
        held, failed = 0.0, None
        rate = max(1.0, start_rps)
        while rate <= max_rps:
            if not await probe(rate):
                failed = rate
                break
            held, rate = rate, rate * growth
        if failed is not None and held == 0.0:  # even the first rate failed: search below it
            lo = max(1.0, failed / 8)
            held = lo if await probe(lo) else 0.0
        for _ in range(bisections if failed is not None and held else 0):
            mid = (held + failed) / 2
            if await probe(mid):
                held = mid
            else:
                failed = mid
    finally:
        await load.close()
    return {"p99_bound_ms": p99_ms, "max_rps": held, "first_failed_rps": failed, "duration_s": duration_s,
            "points": sorted(points, key=lambda p: p["offered_rps"])}


def max_rate(target: str, users: Sequence[str], start_rps: float, p99_ms: float = 50.0, duration_s: float = 4.0,
             k: int = 10, growth: float = 1.25, bisections: int = 2, max_rps: float = 20_000.0) -> dict:
    """The highest open-loop rate (calls/s) held with p99 ≤ `p99_ms`: {"max_rps", "first_failed_rps",
    "points": [{"offered_rps", "admitted_rps", "p50_ms", "p99_ms", "held", ...}]}."""
    if p99_ms <= 0 or duration_s <= 0:
        raise ValueError("p99_ms and duration_s must be positive")
    return asyncio.run(_search(target, users, start_rps / 2, p99_ms, duration_s, k, growth, bisections, max_rps))
