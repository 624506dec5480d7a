"""Reads before writes: a background writer waits for a moment with no call in flight, bounded."""

from __future__ import annotations

import threading
import time

from recsys.rpc.priority import InFlight


def test_an_idle_process_lets_a_writer_through_at_once() -> None:
    gate = InFlight()
    t0 = time.perf_counter()
    assert gate.yield_to_requests(1.0) is True
    assert time.perf_counter() - t0 < 0.05


def test_a_writer_waits_while_a_call_is_in_flight_and_goes_on_when_it_ends() -> None:
    gate = InFlight()
    gate.enter()
    gate.enter()
    woke: list[float] = []
    writer = threading.Thread(target=lambda: woke.append(gate.yield_to_requests(5.0)))
    writer.start()
    time.sleep(0.05)
    gate.leave()
    time.sleep(0.05)
    assert not woke  # one call still in flight
    gate.leave()
    writer.join(2.0)
    assert woke == [True] and gate.count == 0


def test_a_continuous_load_delays_a_writer_by_at_most_the_bound() -> None:
    gate = InFlight()
    gate.enter()
    t0 = time.perf_counter()
    assert gate.yield_to_requests(0.02) is False
    assert 0.015 <= time.perf_counter() - t0 < 0.5
    gate.leave()
