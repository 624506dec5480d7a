"""The EventStream contract, run against every backend so they stay interchangeable."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

import recsys.stream as streams
from recsys.stream import (
    ConsumerLoop,
    DiskLogStream,
    Entry,
    EventStream,
    GroupNotFound,
    StreamError,
    StreamUnavailable,
    open_stream,
    register_stream_backend,
)
from recsys.stream.redis_stream import RedisStream


class Backend:
    """Opens streams on one underlying log: a second open is another process's (or a restart's) view."""

    def __init__(self, name: str, tmp_path: Path, redis_url: str = "") -> None:
        self.name = name
        self._dir = tmp_path / "log"
        self.url = f"file://{self._dir}" if name == "disk" else f"{redis_url}?key=test:events"
        self._opened: list[EventStream] = []

    def open(self, *, retention_s: float | None = None, small_segments: bool = False) -> EventStream:
        opts = {} if retention_s is None else {"retention_s": retention_s}
        if self.name == "disk":
            stream: EventStream = DiskLogStream(self._dir, segment_bytes=1 if small_segments else 1 << 20, **opts)
        else:
            stream = RedisStream(self.url, **opts)
        self._opened.append(stream)
        return stream

    def close_all(self) -> None:
        for stream in self._opened:
            stream.close()


@pytest.fixture(params=["disk", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    b = Backend(request.param, tmp_path, url)
    yield b
    b.close_all()


@pytest.fixture
def stream(backend: Backend) -> EventStream:
    return backend.open()


def fill(stream: EventStream, n: int, start: int = 0) -> None:
    assert stream.append([(f"k{i}", f"e{i}".encode()) for i in range(start, start + n)]) == [True] * n


def datas(entries: list[Entry]) -> list[bytes]:
    return [e.data for e in entries]


def test_append_then_scan_in_order(stream: EventStream) -> None:
    assert stream.ping()
    assert stream.scan() == [] and stream.last_id() is None and stream.length() == 0
    assert stream.append([]) == []
    fill(stream, 5)
    assert stream.append([(None, b"e5"), (None, b"e6")]) == [True, True]
    entries = stream.scan()
    assert datas(entries) == [f"e{i}".encode() for i in range(7)]
    assert all(e.deliveries == 1 for e in entries)
    assert all(stream.before(a.id, b.id) for a, b in zip(entries, entries[1:], strict=False))
    assert not stream.before(entries[3].id, entries[3].id) and not stream.before(entries[4].id, entries[3].id)
    assert stream.last_id() == entries[-1].id and stream.length() == 7
    assert datas(stream.scan(after=entries[2].id, count=2)) == [b"e3", b"e4"]
    assert stream.scan(after=entries[-1].id) == []


def test_dedup_within_a_batch_across_batches_and_after_reopen(backend: Backend) -> None:
    s = backend.open()
    assert s.append([("a", b"1"), ("b", b"2"), ("a", b"dup"), (None, b"3"), (None, b"3")]) == [
        True, True, False, True, True]
    assert s.append([("b", b"again"), ("c", b"4")]) == [False, True]
    reopened = backend.open()  # another process, or a restart: rebuilds what it has seen
    assert reopened.append([("a", b"x"), ("c", b"y"), ("d", b"5")]) == [False, False, True]
    assert s.append([("d", b"z")]) == [False]  # the first object learns what the second appended
    assert datas(reopened.scan()) == [b"1", b"2", b"3", b"3", b"4", b"5"]


def test_dedup_window_expires(stream: EventStream) -> None:
    assert stream.append([("k", b"1")], dedup_ttl_s=0.2) == [True]
    assert stream.append([("k", b"2")], dedup_ttl_s=0.2) == [False]
    time.sleep(0.3)
    assert stream.append([("k", b"3")]) == [True]
    assert datas(stream.scan()) == [b"1", b"3"]


def test_restarted_consumer_rereads_its_unacked_entries(backend: Backend) -> None:
    s = backend.open()
    fill(s, 5)
    s.ensure_group("g")
    first = s.read("g", "c1", 3)
    assert datas(first) == [b"e0", b"e1", b"e2"] and {e.deliveries for e in first} == {1}
    s.ack("g", [first[0].id])
    s.close()

    s = backend.open()  # the restart
    s.ensure_group("g")  # no-op: keeps its position and pending entries
    again = s.pending("g", "c1", 10)
    assert [(e.id, e.data, e.deliveries) for e in again] == [(e.id, e.data, 2) for e in first[1:]]
    assert s.pending("g", "someone-else", 10) == []
    assert datas(s.read("g", "c1", 10)) == [b"e3", b"e4"]
    assert s.read("g", "c1", 10) == []
    assert [e.deliveries for e in s.pending("g", "c1", 1)] == [3]
    s.ack("g", [e.id for e in s.pending("g", "c1", 10)])
    assert s.pending("g", "c1", 10) == [] and s.lag("g") == 0


def test_groups_have_independent_positions(stream: EventStream) -> None:
    fill(stream, 4)
    stream.ensure_group("a")
    stream.ensure_group("b")
    read_a = stream.read("a", "c", 3)
    stream.ack("a", [e.id for e in read_a])
    assert datas(stream.read("b", "c", 1)) == [b"e0"]
    assert stream.lag("a") == 1 and stream.lag("b") == 4
    stream.ensure_group("late", start="end")
    fill(stream, 1, start=4)
    assert datas(stream.read("late", "c", 10)) == [b"e4"]
    assert datas(stream.read("a", "c", 10)) == [b"e3", b"e4"]
    with pytest.raises(GroupNotFound):
        stream.read("nope", "c", 1)
    with pytest.raises(GroupNotFound):
        stream.lag("nope")


def _read_and_exit(url: str, group: str, n: int) -> None:
    s = open_stream(url)
    assert len(s.read(group, "doomed", n)) == n  # then the process ends without acking: a dead consumer


def test_claim_takes_over_a_dead_consumers_entries(backend: Backend) -> None:
    s = backend.open()
    fill(s, 4)
    s.ensure_group("g")
    proc = mp.get_context("fork").Process(target=_read_and_exit, args=(backend.url, "g", 3))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0
    assert s.claim("g", "rescuer", min_idle_s=30, count=10) == []  # not idle long enough: maybe alive
    time.sleep(0.15)
    claimed = s.claim("g", "rescuer", min_idle_s=0.1, count=10)
    assert datas(claimed) == [b"e0", b"e1", b"e2"] and {e.deliveries for e in claimed} == {2}
    assert s.pending("g", "doomed", 10) == []
    assert [(e.id, e.deliveries) for e in s.pending("g", "rescuer", 10)] == [(e.id, 3) for e in claimed]
    s.ack("g", [e.id for e in claimed])
    assert s.lag("g") == 1


def test_poison_entry_is_dead_lettered_through_the_consumer_loop(backend: Backend) -> None:
    s = backend.open()
    s.append([(f"k{i}", b"poison" if i == 2 else f"ok{i}".encode()) for i in range(5)])
    applied: set[bytes] = set()

    def handler(entries: list[Entry]) -> None:
        for e in entries:
            if e.data == b"poison":
                raise ValueError("cannot parse")
            applied.add(e.data)

    loop = ConsumerLoop(s, "g", "c", handler, max_deliveries=3, block_s=0)
    for _ in range(10):
        loop.poll_once()
        if s.dead_letters("g"):
            break
    assert applied == {b"ok0", b"ok1", b"ok3", b"ok4"}
    poison_id = s.scan()[2].id
    [dead] = backend.open().dead_letters("g")  # survives a reopen
    assert (dead.entry_id, dead.group, dead.data, dead.deliveries) == (poison_id, "g", b"poison", 3)
    assert "ValueError: cannot parse" in dead.reason
    assert s.dead_letters("other") == [] and len(s.dead_letters()) == 1
    assert s.lag("g") == 0 and loop.poll_once() == 0


def test_seek_begin_end_and_id(stream: EventStream) -> None:
    fill(stream, 5)
    ids = [e.id for e in stream.scan()]
    stream.ensure_group("g")
    stream.read("g", "c", 2)
    stream.seek("g", "begin")
    assert stream.pending("g", "c", 10) == []  # seek clears the pending entries
    assert datas(stream.read("g", "c", 10)) == [f"e{i}".encode() for i in range(5)]
    stream.seek("g", ids[2])
    assert datas(stream.read("g", "c", 10)) == [b"e3", b"e4"]
    stream.seek("g", "end")
    assert stream.read("g", "c", 10) == [] and stream.lag("g") == 0
    fill(stream, 1, start=5)
    assert datas(stream.read("g", "c", 10)) == [b"e5"]
    stream.ensure_group("from-id", start=ids[3])
    assert stream.lag("from-id") == 2
    assert stream.read("g", "c", 1, block_s=0) == []
    assert datas(stream.read("from-id", "c", 10)) == [b"e4", b"e5"]
    with pytest.raises(GroupNotFound):
        stream.seek("nope", "begin")


def test_lag_counts_undelivered_and_pending(stream: EventStream) -> None:
    stream.ensure_group("g")
    assert stream.lag("g") == 0
    fill(stream, 6)
    assert stream.lag("g") == 6
    got = stream.read("g", "c", 4)
    assert stream.lag("g") == 6
    stream.ack("g", [e.id for e in got[:3]])
    assert stream.lag("g") == 3
    got += stream.read("g", "c", 10)
    stream.ack("g", [e.id for e in got])
    stream.ack("g", [got[0].id])  # acking twice is harmless
    assert stream.lag("g") == 0


def test_trim_never_removes_unacknowledged_entries(backend: Backend) -> None:
    assert backend.open().trim() == 0  # nothing yet
    s = backend.open(retention_s=0, small_segments=True)
    for i in range(12):
        s.append([(None, f"e{i}".encode())])  # one disk segment each
    s.ensure_group("g")
    got = s.read("g", "c", 8)
    s.ack("g", [e.id for e in got[:5]])  # e5..e7 stay pending, e8.. undelivered
    assert backend.open().trim() == 0  # within the default 7-day retention: kept
    assert s.trim() == 5
    assert datas(s.scan()) == [f"e{i}".encode() for i in range(5, 12)] and s.length() == 7
    assert datas(s.pending("g", "c", 10)) == [b"e5", b"e6", b"e7"] and s.lag("g") == 7
    s.ensure_group("slow")  # begins at the oldest retained entry and holds everything from there
    assert s.trim() == 0
    assert datas(s.read("slow", "c", 1)) == [b"e5"]


def test_blocking_read_waits_and_wakes_up_on_append(backend: Backend) -> None:
    s = backend.open()
    s.ensure_group("g", start="end")
    start = time.monotonic()
    assert s.read("g", "c", 10, block_s=0.2) == []
    assert 0.15 <= time.monotonic() - start < 1.5
    writer = backend.open()
    timer = threading.Timer(0.1, lambda: writer.append([(None, b"x")]))
    timer.start()
    start = time.monotonic()
    assert datas(s.read("g", "c", 10, block_s=3.0)) == [b"x"]
    assert time.monotonic() - start < 2.0
    timer.join()


def test_names_are_checked(stream: EventStream) -> None:
    with pytest.raises(ValueError, match="group name"):
        stream.ensure_group("../escape")
    stream.ensure_group("g")
    with pytest.raises(ValueError, match="consumer name"):
        stream.read("g", "a b", 1)


def test_open_stream_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_stream(f"file://{tmp_path}/abs?segment_mb=1&retention_s=60")
    assert isinstance(absolute, DiskLogStream) and absolute.path == tmp_path / "abs"
    assert absolute.retention_s == 60 and absolute.ping()
    monkeypatch.chdir(tmp_path)
    relative = open_stream("file://rel/dir")
    assert isinstance(relative, DiskLogStream) and relative.path == tmp_path / "rel" / "dir"
    remote = open_stream("redis://127.0.0.1:1/0?key=x:events&wait_replicas=1")
    assert isinstance(remote, RedisStream) and remote.key == "x:events" and remote.wait_replicas == 1
    remote.close()
    with pytest.raises(ValueError, match="scheme 'kafka'") as err:
        open_stream("kafka://user:secret@broker:9092")
    assert "secret" not in str(err.value)


def test_a_backend_registers_its_url_scheme(tmp_path: Path) -> None:
    register_stream_backend(("memtest",), lambda url: DiskLogStream(tmp_path / url.split("://", 1)[1]))
    s = open_stream("memtest://here")
    assert isinstance(s, DiskLogStream) and s.path == tmp_path / "here"
    assert "memtest" in streams.stream_schemes()


# -- all or nothing: a failed append leaves no trace, not even its dedup keys ----------------------------

def test_disk_append_that_fails_midway_appends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = DiskLogStream(tmp_path / "log")
    assert s.append([("a", b"1")]) == [True]
    real_pwrite = os.pwrite

    def disk_full_midway(fd: int, data: bytes, offset: int) -> int:
        real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", disk_full_midway)
    with pytest.raises(StreamUnavailable, match=str(tmp_path / "log")):
        s.append([("b", b"2"), ("c", b"3")])
    monkeypatch.undo()

    def fsync_fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync_fails)  # written but not durable: rolled back as well
    with pytest.raises(StreamUnavailable, match="Input/output error"):
        s.append([("b", b"2")])
    monkeypatch.undo()
    assert datas(s.scan()) == [b"1"] and s.length() == 1
    assert s.append([("b", b"2"), ("c", b"3")]) == [True, True]  # the failed keys were not remembered
    assert datas(DiskLogStream(tmp_path / "log").scan()) == [b"1", b"2", b"3"]


def test_disk_log_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StreamUnavailable, match="a-file"):
        open_stream(f"file://{tmp_path}/a-file/log")


class _Proxy:
    """A TCP relay to Redis that can be cut: Redis becoming unreachable while a stream is in use."""

    def __init__(self, target: int) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._target = target
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)

    def cut(self) -> None:
        with suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for conn in self._conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


@pytest.mark.redis
def test_redis_unreachable_mid_use_appends_nothing(redis_url: str) -> None:
    proxy = _Proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    via_proxy = RedisStream(f"redis://default:s3cret@127.0.0.1:{proxy.port}/0?key=test:events")
    assert via_proxy.append([("a", b"1")]) == [True]
    proxy.cut()
    start = time.monotonic()
    with pytest.raises(StreamUnavailable, match=f"127.0.0.1:{proxy.port}") as err:
        via_proxy.append([("b", b"2"), ("c", b"3")])
    assert time.monotonic() - start < 3.0 and "s3cret" not in str(err.value)
    assert not via_proxy.ping()
    via_proxy.close()
    direct = RedisStream(f"{redis_url}?key=test:events")
    assert datas(direct.scan()) == [b"1"]
    assert direct.append([("b", b"2")]) == [True]
    direct.close()


@pytest.mark.redis
def test_redis_script_error_appends_nothing(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("test:events", "not a stream")
    s = RedisStream(f"{redis_url}?key=test:events")
    with pytest.raises(StreamError, match="not a stream") as err:
        s.append([("a", b"1")])
    assert not isinstance(err.value, StreamUnavailable)
    assert client.exists("test:events:seen:a") == 0
    s.close()
    client.close()


def test_delete_group_forgets_it(stream) -> None:
    stream.append([(None, b"a"), (None, b"b")])
    stream.ensure_group("gone", "begin")
    stream.read("gone", "c1", 1)
    stream.delete_group("gone")
    stream.delete_group("gone")  # absent: a no-op
    stream.delete_group("never-existed")
    stream.ensure_group("gone", "end")
    assert stream.read("gone", "c1", 10) == [] and stream.lag("gone") == 0
