"""Single flight: concurrent cache misses for the same key share one computation.

Without it, a popular user's list expiring makes every in-flight request for that user recompute the
same answer at once (a stampede on feature_svc and candidate_svc).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Flight:
    future: asyncio.Future[Any]
    waiters: int = 0


class SingleFlight:
    """Deduplicates concurrent `run` calls per key within one asyncio event loop.

    The computation runs in its own task: a cancelled caller stops waiting but does not cancel it for
    the others. Only when every caller has gone is it cancelled (nobody wants its result, and a new
    caller then starts afresh). The key is released as soon as the computation ends, so results are
    never reused after the fact: keeping them is the cache's job.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        """Keys being computed now."""
        return len(self._flights)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`fn()`'s result and whether it was shared (True for every caller but the one that started it).

        An exception raised by `fn` propagates to every caller waiting on it.
        """
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(fn()))
            self._flights[key] = flight
            flight.future.add_done_callback(lambda fut, f=flight: self._finished(key, f))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.future.done():  # every caller was cancelled
                self._release(key, flight)
                flight.future.cancel()

    def _finished(self, key: str, flight: _Flight) -> None:
        self._release(key, flight)
        if not flight.future.cancelled():
            flight.future.exception()  # retrieved: no "exception was never retrieved" log when nobody waits

    def _release(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
