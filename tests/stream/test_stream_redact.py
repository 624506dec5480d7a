"""The EventStream contract for erasing entries (Users/Forget), against every backend."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from recsys.stream import DiskLogStream, Entry, EventStream, Redaction
from recsys.stream.segments import encode

from .test_stream_contract import Backend, backend, stream  # noqa: F401  (the backend fixtures)


def erase_secret(data: bytes) -> bytes | None:
    """The select of these tests: entries naming "secret" become as many x's."""
    return b"x" * len(data) if b"secret" in data else None


def visible(entries: list[Entry]) -> list[bytes]:
    """What a reader learns: a backend may delete an erased entry or hand out its replacement."""
    return [e.data for e in entries if not set(e.data) <= {ord("x")}]


def test_redact_erases_retained_pending_and_dead_entries_and_keeps_the_rest(stream: EventStream) -> None:  # noqa: F811
    stream.ensure_group("g", "begin")
    stream.append([(f"k{i}", (b"secret-%d" if i % 3 == 0 else b"plain-%d") % i) for i in range(9)])
    before = {e.id: e.data for e in stream.scan()}
    delivered = stream.read("g", "c1", 4)  # 0..3 pending, 4..8 undelivered
    stream.dead_letter("g", delivered[0], "poison")  # a dead letter holding a secret entry
    assert stream.redact(erase_secret) == Redaction(entries=3, dead_letters=1)
    after = stream.scan()
    assert all(b"secret" not in e.data for e in after)
    assert visible(after) == [d for d in before.values() if b"plain" in d]
    assert all(before[e.id] == e.data or b"secret" in before[e.id] for e in after)  # positions stay
    assert visible(stream.pending("g", "c1", 10)) == [b"plain-1", b"plain-2"]
    assert visible(stream.read("g", "c1", 10)) == [b"plain-4", b"plain-5", b"plain-7", b"plain-8"]
    assert all(b"secret" not in d.data for d in stream.dead_letters("g"))
    assert stream.redact(erase_secret) == Redaction()  # nothing left to erase
    stream.append([("k9", b"secret-9")])  # appended after: a later redact takes it
    assert stream.redact(erase_secret).entries == 1


def test_disk_redaction_must_keep_the_length_and_keeps_segment_times(tmp_path: Path) -> None:
    log = DiskLogStream(tmp_path / "log", segment_bytes=1)  # one segment per batch
    try:
        for i in range(3):
            log.append([(f"k{i}", b"secret-%d" % i)])
        segments = sorted((tmp_path / "log" / "segments").iterdir())
        for k, path in enumerate(segments):
            os.utime(path, (1_000_000 + k, 1_000_000 + k))
        with pytest.raises(ValueError, match="as long as"):
            log.redact(lambda d: b"short")
        assert log.redact(erase_secret).entries == 3
        assert [p.stat().st_mtime for p in segments] == [1_000_000 + k for k in range(3)]  # retention unchanged
        assert [e.data for e in log.scan()] == [b"x" * 8] * 3
    finally:
        log.close()


def test_readers_racing_a_redaction_never_skip_an_entry(backend: Backend) -> None:  # noqa: F811
    """A reader that catches a frame mid-rewrite must re-read it, never skip the rest of its segment."""
    writer = backend.open(small_segments=True)
    reader = backend.open(small_segments=True)
    n = 600
    for start in range(0, n, 50):
        writer.append([(f"k{i}", (b"secret-%04d" if i % 2 else b"plain-%04d") % i) for i in range(start, start + 50)])
    reader.ensure_group("g", "begin")
    seen: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or reader.lag("g"):
            entries = reader.read("g", "c", 7)
            seen.extend(e.data for e in entries)
            reader.ack("g", [e.id for e in entries])

    thread = threading.Thread(target=consume)
    thread.start()
    for filler in b"xyz":  # every pass rewrites every erased entry again, with another filler
        writer.redact(lambda d, f=filler: None if d.startswith(b"plain") else bytes([f]) * len(d))
    done.set()
    thread.join(30)
    assert not thread.is_alive()
    plain = [b"plain-%04d" % i for i in range(0, n, 2)]
    assert [d for d in seen if d.startswith(b"plain")] == plain
    if backend.name == "disk":  # positions are kept: every entry arrives, erased or not
        assert len(seen) == n


def test_a_disk_reader_that_catches_a_rewrite_midway_waits_for_it(tmp_path: Path) -> None:
    """Mid-rewrite a frame's CRC does not match: the reader must wait for the writer's lock and re-read,
    not take the frame for a torn tail and skip the rest of the segment."""
    writer, reader = DiskLogStream(tmp_path / "log"), DiskLogStream(tmp_path / "log")
    try:
        writer.append([(f"k{i}", b"secret-%d" % i) for i in range(4)])
        log = writer._log
        frame = list(log.frames(0, log.snapshot()))[1]
        raw = encode(frame.seq, frame.appended_at, frame.expires_at, frame.rest, frame.key, b"x" * len(frame.data))
        path, got = log.path(0), []
        segments = reader._log.snapshot()  # taken before the rewrite, as by a reader already running
        with log.locked(fcntl.LOCK_EX), path.open("r+b") as f:
            f.seek(frame.offset + 8)
            f.write(raw[8:])  # the new data, under the old CRC
            f.flush()
            thread = threading.Thread(target=lambda: got.extend(reader._log.frames(0, segments)))
            thread.start()
            thread.join(0.3)
            assert thread.is_alive(), "the reader did not wait for the rewrite"
            f.seek(frame.offset)
            f.write(raw[:8])
        thread.join(5)
        assert [e.data for e in got] == [b"secret-0", b"x" * 8, b"secret-2", b"secret-3"]
    finally:
        writer.close()
        reader.close()
