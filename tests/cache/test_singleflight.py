"""SingleFlight: concurrent misses compute once, failures reach every waiter, cancellation is contained."""

from __future__ import annotations

import asyncio

import pytest

from recsys.cache import SingleFlight


class Computation:
    """Counts calls and blocks until released, so tests control when the shared work ends."""

    def __init__(self, result: object = "list", error: Exception | None = None) -> None:
        self.calls = 0
        self.result, self.error = result, error
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> object:
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        return self.result


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_100_concurrent_misses_compute_once() -> None:
    async def main() -> None:
        flight, compute = SingleFlight(), Computation(result=["i1", "i2"])
        tasks = [asyncio.create_task(flight.run("u1|fp", compute)) for _ in range(100)]
        await settle()
        assert len(flight) == 1
        compute.release.set()
        results = await asyncio.gather(*tasks)
        assert compute.calls == 1
        assert all(value == ["i1", "i2"] for value, _ in results)
        assert sorted(shared for _, shared in results) == [False] + [True] * 99
        assert results[0] == (["i1", "i2"], False)  # the first caller started it
        assert len(flight) == 0

    asyncio.run(main())


def test_different_keys_run_independently() -> None:
    async def main() -> None:
        flight, a, b = SingleFlight(), Computation("a"), Computation("b")
        ta, tb = asyncio.create_task(flight.run("a", a)), asyncio.create_task(flight.run("b", b))
        await settle()
        b.release.set()
        assert await tb == ("b", False)
        assert not ta.done()
        a.release.set()
        assert await ta == ("a", False)

    asyncio.run(main())


def test_the_key_is_released_when_done_so_later_calls_compute_again() -> None:
    async def main() -> None:
        flight = SingleFlight()
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert await flight.run("k", compute) == (1, False)
        assert await flight.run("k", compute) == (2, False)
        assert len(flight) == 0

    asyncio.run(main())


def test_an_exception_reaches_every_waiter_and_releases_the_key() -> None:
    async def main() -> None:
        flight, compute = SingleFlight(), Computation(error=RuntimeError("candidate_svc down"))
        tasks = [asyncio.create_task(flight.run("k", compute)) for _ in range(10)]
        await settle()
        compute.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert compute.calls == 1
        assert all(isinstance(r, RuntimeError) and str(r) == "candidate_svc down" for r in results)
        assert len(flight) == 0
        retry = Computation("ok")
        retry.release.set()
        assert await flight.run("k", retry) == ("ok", False)

    asyncio.run(main())


def test_a_synchronous_error_of_fn_propagates_without_holding_the_key() -> None:
    async def main() -> None:
        flight = SingleFlight()

        def broken() -> asyncio.Future[int]:
            raise ValueError("bad request")

        with pytest.raises(ValueError, match="bad request"):
            await flight.run("k", broken)
        assert len(flight) == 0

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_cancel_the_computation_for_others() -> None:
    async def main() -> None:
        flight, compute = SingleFlight(), Computation("list")
        first = asyncio.create_task(flight.run("k", compute))  # the one that started it
        others = [asyncio.create_task(flight.run("k", compute)) for _ in range(3)]
        await settle()
        first.cancel()
        others[0].cancel()
        await settle()
        assert first.cancelled() and others[0].cancelled()
        assert not compute.cancelled and len(flight) == 1
        compute.release.set()
        assert await asyncio.gather(*others[1:]) == [("list", True), ("list", True)]
        assert compute.calls == 1 and not compute.cancelled

    asyncio.run(main())


def test_when_every_waiter_is_cancelled_the_computation_stops_and_the_key_is_free() -> None:
    async def main() -> None:
        flight, compute = SingleFlight(), Computation("stale")
        tasks = [asyncio.create_task(flight.run("k", compute)) for _ in range(3)]
        await settle()
        for t in tasks:
            t.cancel()
        await settle()
        assert compute.cancelled
        assert len(flight) == 0
        fresh = Computation("fresh")
        fresh.release.set()
        assert await flight.run("k", fresh) == ("fresh", False)  # not joined to the cancelled one

    asyncio.run(main())


def test_a_late_caller_joins_a_running_computation() -> None:
    async def main() -> None:
        flight, compute = SingleFlight(), Computation(7)
        early = asyncio.create_task(flight.run("k", compute))
        await settle()
        late = asyncio.create_task(flight.run("k", compute))
        await settle()
        compute.release.set()
        assert await early == (7, False) and await late == (7, True)
        assert compute.calls == 1

    asyncio.run(main())
