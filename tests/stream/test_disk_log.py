"""What only the disk log has to get right: torn tails, segments, several writer processes."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from recsys.stream import DiskLogStream
from recsys.stream.segments import HEADER_SIZE, encode


def _segments(directory: Path) -> list[Path]:
    return sorted((directory / "segments").glob("*.log"))


def _torn_batch(damage: str) -> bytes:
    """What a writer killed mid-append leaves behind."""
    now = time.time()
    first, second = encode(2, now, 0.0, 1, b"", b"torn-1"), encode(3, now, 0.0, 0, b"", b"torn-2")
    if damage == "short":  # died inside the second frame
        return first + second[:-3]
    if damage == "half_batch":  # the first frame of a two-record batch is complete, the second missing
        return first
    flipped = bytearray(first + second)  # bad_crc: the bytes are there but not what was written
    flipped[-1] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("damage", ["short", "half_batch", "bad_crc"])
def test_torn_tail_is_invisible_then_truncated_by_the_next_writer(tmp_path: Path, damage: str) -> None:
    s = DiskLogStream(tmp_path)
    s.append([("a", b"1"), ("b", b"2")])
    [segment] = _segments(tmp_path)
    good = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(_torn_batch(damage))

    reader = DiskLogStream(tmp_path)
    assert [e.data for e in reader.scan()] == [b"1", b"2"] and reader.length() == 2
    assert reader.last_id() == s.scan()[-1].id
    reader.ensure_group("g")
    assert [e.data for e in reader.read("g", "c", 10)] == [b"1", b"2"]
    assert reader.lag("g") == 2

    writer = DiskLogStream(tmp_path)
    assert writer.append([("c", b"3"), ("a", b"dup")]) == [True, False]
    assert segment.stat().st_size == good + HEADER_SIZE + 2  # the torn bytes are gone
    assert [e.data for e in reader.scan()] == [b"1", b"2", b"3"]
    assert [e.data for e in reader.read("g", "c", 10)] == [b"3"]


def test_segments_roll_and_everything_survives_reopen(tmp_path: Path) -> None:
    s = DiskLogStream(tmp_path, segment_bytes=200)
    for k in range(10):
        assert s.append([(f"k{k}-{j}", f"e{k}-{j}".encode()) for j in range(3)]) == [True] * 3
    assert len(_segments(tmp_path)) >= 5  # a batch never spans segments, each holds whole batches
    s.ensure_group("g")
    got = s.read("g", "c", 7)
    s.ack("g", [e.id for e in got[:4]])
    s.close()

    again = DiskLogStream(tmp_path, segment_bytes=200)
    entries = again.scan()
    assert [e.data for e in entries] == [f"e{k}-{j}".encode() for k in range(10) for j in range(3)]
    assert again.length() == 30 and again.last_id() == entries[-1].id
    assert again.append([("k0-0", b"old key"), ("k9-2", b"new segment key"), ("fresh", b"x")]) == [
        False, False, True]
    assert [e.data for e in again.pending("g", "c", 10)] == [b"e1-1", b"e1-2", b"e2-0"]
    assert [e.data for e in again.read("g", "c", 1)] == [b"e2-1"]
    assert again.lag("g") == 31 - 4


def _append_worker(directory: str, proc: int, go: mp.synchronize.Event) -> None:
    s = DiskLogStream(directory, segment_bytes=2000)
    go.wait(10)
    for k in range(10):
        batch = [(f"p{proc}-{k}-{j}", f"p{proc}-{k}-{j}".encode()) for j in range(4)]
        batch.append((f"shared-{k}", f"shared-{k}-by-{proc}".encode()))  # both processes race for each
        s.append(batch)


def test_two_processes_appending_never_lose_or_duplicate(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_append_worker, args=(str(tmp_path), p, go)) for p in range(2)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0

    s = DiskLogStream(tmp_path)
    entries = s.scan(count=10_000)
    own = [e.data for e in entries if not e.data.startswith(b"shared")]
    shared = [e.data.rsplit(b"-by-", 1)[0] for e in entries if e.data.startswith(b"shared")]
    assert sorted(own) == sorted(f"p{p}-{k}-{j}".encode() for p in range(2) for k in range(10) for j in range(4))
    assert sorted(shared) == sorted(f"shared-{k}".encode() for k in range(10))  # each key accepted once
    assert s.length() == 90 and len(_segments(tmp_path)) > 1
    assert all(s.before(a.id, b.id) for a, b in zip(entries, entries[1:], strict=False))


def test_an_idle_blocking_read_backs_off_and_new_entries_restore_the_fast_poll(tmp_path: Path) -> None:
    """Polls of the change marker: 10 ms apart while entries come, backing off to 50 ms once idle."""
    from recsys.stream import disk_log

    log = DiskLogStream(tmp_path / "log")
    log.ensure_group("g", "begin")
    polls = 0
    marker = log._log.change_marker

    def counted(segs):
        nonlocal polls
        polls += 1
        return marker(segs)

    log._log.change_marker = counted
    t0 = time.monotonic()
    assert log.read("g", "c", 10, block_s=0.4) == []
    assert time.monotonic() - t0 >= 0.4
    assert polls <= 12  # 10, 20, 40, then 50 ms apart (at a steady 10 ms it would be about 40)
    assert log._poll_s == disk_log._IDLE_POLL_S
    log.append([("k1", b"x")])
    assert [e.data for e in log.read("g", "c", 10, block_s=0.4)] == [b"x"]
    assert log._poll_s == disk_log._POLL_S
