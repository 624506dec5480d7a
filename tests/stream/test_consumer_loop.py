"""ConsumerLoop on the disk log: at-least-once delivery, poison entries, outages, dead consumers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from recsys.stream import ConsumerLoop, DiskLogStream, Entry, StreamUnavailable


def _metric(name: str, group: str) -> float:
    return REGISTRY.get_sample_value(name, {"group": group}) or 0.0


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def stream(tmp_path: Path) -> DiskLogStream:
    s = DiskLogStream(tmp_path)
    yield s
    s.close()


def test_an_idempotent_handler_counts_redelivered_entries_once(stream: DiskLogStream) -> None:
    records = [(f"k{i}", f"e{i}".encode()) for i in range(30)]
    assert sum(stream.append(records + [("k5", b"e5 again")])) == 30
    stream.ensure_group("g1")
    assert len(stream.read("g1", "worker", 10)) == 10  # the worker crashes before acking these
    seen: set[bytes] = set()
    calls: list[int] = []

    def handler(entries: list[Entry]) -> None:
        calls.append(len(entries))
        seen.update(e.data for e in entries)

    applied_before = _metric("recsys_stream_consumer_applied_total", "g1")
    loop = ConsumerLoop(stream, "g1", "worker", handler, batch=8)  # the restarted worker
    loop.start_thread()
    try:
        _wait_for(lambda: stream.lag("g1") == 0 and len(seen) == 30)
    finally:
        loop.stop()
    assert seen == {f"e{i}".encode() for i in range(30)}
    assert sum(calls) == 30 and max(calls) <= 8
    assert _metric("recsys_stream_consumer_applied_total", "g1") - applied_before == 30
    assert _metric("recsys_stream_consumer_lag", "g1") == 0


def test_a_poison_entry_ends_in_dead_letters_and_the_others_are_applied(stream: DiskLogStream) -> None:
    stream.append([(None, b"poison" if i == 3 else f"ok{i}".encode()) for i in range(8)])
    applied: set[bytes] = set()

    def handler(entries: list[Entry]) -> None:
        if any(e.data == b"poison" for e in entries):
            raise KeyError("unknown event type")
        applied.update(e.data for e in entries)

    dead_before = _metric("recsys_stream_dead_letters_total", "g2")
    loop = ConsumerLoop(stream, "g2", "c", handler, max_deliveries=2)
    loop.start_thread()
    try:
        _wait_for(lambda: bool(stream.dead_letters("g2")) and stream.lag("g2") == 0)
    finally:
        loop.stop()
    assert applied == {f"ok{i}".encode() for i in range(8) if i != 3}
    [dead] = stream.dead_letters("g2")
    assert dead.data == b"poison" and dead.deliveries == 2 and "KeyError" in dead.reason
    assert _metric("recsys_stream_dead_letters_total", "g2") - dead_before == 1


def test_transient_handler_errors_retry_without_counting_deliveries(stream: DiskLogStream) -> None:
    stream.append([(None, b"a"), (None, b"b")])
    failures = [3]
    applied: list[bytes] = []

    def handler(entries: list[Entry]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("feature store down")
        applied.extend(e.data for e in entries)

    loop = ConsumerLoop(stream, "g3", "c", handler, max_deliveries=1, block_s=0,
                        transient_errors=(ConnectionError,))
    for _ in range(3):
        with pytest.raises(ConnectionError):
            loop.poll_once()
    assert loop.poll_once() == 2
    assert applied == [b"a", b"b"] and stream.dead_letters() == [] and stream.lag("g3") == 0


def test_run_survives_an_unavailable_stream(stream: DiskLogStream, monkeypatch: pytest.MonkeyPatch) -> None:
    stream.append([(None, b"x")])
    real_read, outages = stream.read, [4]

    def flaky_read(*args: object, **kwargs: object) -> list[Entry]:
        if outages[0]:
            outages[0] -= 1
            raise StreamUnavailable("event log unavailable during read: disk gone")
        return real_read(*args, **kwargs)

    monkeypatch.setattr(stream, "read", flaky_read)
    applied: list[bytes] = []
    loop = ConsumerLoop(stream, "g4", "c", lambda entries: applied.extend(e.data for e in entries))
    thread = loop.start_thread()
    try:
        _wait_for(lambda: applied == [b"x"])
        assert thread.is_alive() and outages == [0]
    finally:
        loop.stop()
    assert not thread.is_alive()


def test_the_loop_claims_entries_of_a_dead_consumer(stream: DiskLogStream) -> None:
    stream.append([(None, f"e{i}".encode()) for i in range(5)])
    stream.ensure_group("g5")
    stream.read("g5", "dead", 3)  # never acked: its process died
    handled: list[Entry] = []
    loop = ConsumerLoop(stream, "g5", "live", handled.extend, claim_idle_s=0.1, block_s=0)
    assert loop.poll_once() == 2  # nothing idle yet: takes the two undelivered ones
    time.sleep(0.15)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        _wait_for(lambda: stream.lag("g5") == 0)
    finally:
        stop.set()
        runner.join(5)
    assert sorted(e.data for e in handled) == [f"e{i}".encode() for i in range(5)]
    assert {e.deliveries for e in handled if e.data in (b"e0", b"e1", b"e2")} == {2}


def test_a_vanished_group_is_recreated(stream: DiskLogStream, tmp_path: Path) -> None:
    stream.append([(None, b"a")])
    applied: list[bytes] = []
    loop = ConsumerLoop(stream, "g6", "c", lambda entries: applied.extend(e.data for e in entries), block_s=0)
    loop.poll_once()
    (tmp_path / "groups" / "g6.json").unlink()  # e.g. a Redis without persistence restarted
    stream.append([(None, b"b")])
    loop.start_thread()
    try:
        _wait_for(lambda: b"b" in applied)
    finally:
        loop.stop()
    assert applied[0] == b"a" and set(applied) == {b"a", b"b"}  # at least once: "a" may come again


def test_a_paced_loop_handles_a_batch_in_slices_and_yields_before_each(stream: DiskLogStream) -> None:
    stream.append([(None, f"e{i}".encode()) for i in range(50)])
    events: list[str] = []
    loop = ConsumerLoop(stream, "paced", "c", lambda entries: events.append(f"handle {len(entries)}"), batch=50,
                        slice_size=16, pace=lambda: events.append("pace"))
    assert loop.poll_once() == 50
    # one yield before the read, then one before each slice of at most 16
    assert events == ["pace", "pace", "handle 16", "pace", "handle 16", "pace", "handle 16", "pace", "handle 2"]
    assert stream.lag("paced") == 0


def test_a_failing_slice_is_retried_entry_by_entry_and_the_other_slices_are_kept(stream: DiskLogStream) -> None:
    stream.append([(None, b"poison" if i == 5 else f"ok{i}".encode()) for i in range(12)])
    applied: list[bytes] = []

    def handler(entries: list[Entry]) -> None:
        if any(e.data == b"poison" for e in entries):
            raise ValueError("poison")
        applied.extend(e.data for e in entries)

    loop = ConsumerLoop(stream, "slices", "c", handler, batch=12, slice_size=4, max_deliveries=1)
    assert loop.poll_once() == 11
    assert applied == [f"ok{i}".encode() for i in range(12) if i != 5]
    assert [d.data for d in stream.dead_letters("slices")] == [b"poison"]


def test_pending_entries_are_asked_for_only_when_some_may_exist(stream: DiskLogStream,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    stream.append([(None, f"e{i}".encode()) for i in range(6)])
    stream.ensure_group("quiet")
    assert len(stream.read("quiet", "c", 2)) == 2  # a previous life of consumer c left two pending
    calls = {"pending": 0}
    real_pending = stream.pending

    def counting_pending(*args, **kwargs):
        calls["pending"] += 1
        return real_pending(*args, **kwargs)

    monkeypatch.setattr(stream, "pending", counting_pending)
    seen: list[bytes] = []
    loop = ConsumerLoop(stream, "quiet", "c", lambda entries: seen.extend(e.data for e in entries), batch=10,
                        block_s=0)
    for _ in range(5):
        loop.poll_once()
    assert sorted(seen) == sorted(f"e{i}".encode() for i in range(6))
    assert calls["pending"] == 1  # at start only: every later batch was acknowledged


def test_entries_a_failed_read_delivered_are_applied_after_the_outage(stream: DiskLogStream,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis can run an XREADGROUP and die before its reply arrives: the entries are pending for this
    consumer, and the next poll after the outage must ask for them (found by killing Redis under load)."""
    stream.append([(None, b"before")])
    stream.ensure_group("lost-reply")
    real_read, lost = stream.read, [1]
    seen: list[bytes] = []
    loop = ConsumerLoop(stream, "lost-reply", "c", lambda entries: seen.extend(e.data for e in entries),
                        block_s=0, claim_idle_s=3600)  # no claim rescues them within the test
    loop.poll_once()
    assert seen == [b"before"]
    stream.append([(None, b"during")])

    def read_then_lose_the_reply(*args: object, **kwargs: object) -> list[Entry]:
        entries = real_read(*args, **kwargs)
        if lost[0] and entries:
            lost[0] -= 1
            raise StreamUnavailable("event log unavailable during read: connection reset")
        return entries

    monkeypatch.setattr(stream, "read", read_then_lose_the_reply)
    with pytest.raises(StreamUnavailable):
        loop.poll_once()
    loop.poll_once()
    assert seen == [b"before", b"during"] and stream.lag("lost-reply") == 0


def test_an_interval_reads_what_arrived_meanwhile_at_once(stream: DiskLogStream) -> None:
    """consumer_interval_s: the loop rests between reads, so a burst that arrives while it rests is one read
    and one handler call, applied within the interval."""
    stream.ensure_group("gi")
    calls: list[int] = []
    loop = ConsumerLoop(stream, "gi", "worker", lambda entries: calls.append(len(entries)), batch=100,
                        block_s=0.0, interval_s=0.5)
    loop.start_thread()
    try:
        stream.append([("first", b"e0")])
        _wait_for(lambda: sum(calls) == 1)
        t0 = time.monotonic()
        for i in range(1, 6):  # a burst while the loop rests
            stream.append([(f"k{i}", f"e{i}".encode())])
            time.sleep(0.01)
        _wait_for(lambda: sum(calls) == 6, timeout_s=2.0)
        assert time.monotonic() - t0 < 1.0  # visible within the interval (and a read)
        assert calls[1:] == [5]
    finally:
        loop.stop()
