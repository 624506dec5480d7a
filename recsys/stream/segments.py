"""Append-only segment files with CRC-framed records: the storage layer under the disk log.

Layout of one log directory:

    append.lock                     flock: exclusive to append or trim, shared to take a consistent snapshot
    segments/<20-digit base>.log    records; base = global byte offset of the file's first byte

Record frame (little endian), one `write` + one `fsync` per batch:

    u32 length (key + data) | u32 crc32 (of all that follows) | u64 seq | f64 appended_at |
    f64 dedup_expires_at (0 without a key) | u32 rest (records after it in its batch) | u16 key length | key | data

An entry's position is the global byte offset of its frame, so positions are totally ordered and a
segment's base follows from the previous one's size. A batch is visible only once all its frames are
complete and valid (`rest` counts down to 0): a writer killed mid-write leaves a torn tail that readers
skip and the next writer truncates under the lock. Readers take segment sizes under the shared lock and
writers hold the exclusive one from write to fsync or rollback, so no reader ever sees bytes that a
failing writer then truncates (which would let a later record reuse a position already consumed).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_LEN_CRC = struct.Struct("<II")
_META = struct.Struct("<QddIH")
HEADER_SIZE = _LEN_CRC.size + _META.size
MAX_KEY_BYTES = 0xFFFF
_CHUNK = 1 << 20
_PRUNE_MIN = 100_000  # dedup keys held before the first sweep of expired ones

Segments = list[tuple[int, int]]  # (base offset, size in bytes), oldest first


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int
    seq: int  # 0, 1, 2, ... in log order: counts entries between two positions without scanning
    appended_at: float
    expires_at: float
    rest: int
    key: bytes
    data: bytes
    end: int  # offset of the next frame


def encode(seq: int, appended_at: float, expires_at: float, rest: int, key: bytes, data: bytes) -> bytes:
    meta = _META.pack(seq, appended_at, expires_at, rest, len(key))
    crc = zlib.crc32(data, zlib.crc32(key, zlib.crc32(meta)))
    return _LEN_CRC.pack(len(key) + len(data), crc) + meta + key + data


class SegmentLog:
    """One directory of segments, shared by any number of processes; thread-safe within one."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_dir = directory / "segments"
        self.segment_bytes = max(1, int(segment_bytes))
        self._mutex = threading.RLock()  # guards the fds and caches below; flock only works across processes
        self._depth = 0
        self._lock_fd: int | None = None
        self._read_fds: dict[int, int] = {}
        self._keys: dict[bytes, float] | None = None  # dedup key -> expiry; built by the first append
        self._keys_end = 0
        self._prune_at = _PRUNE_MIN
        self._tail: tuple[int, int, int] | None = None  # (end of complete batches, last offset, last seq)

    def path(self, base: int) -> Path:
        return self.segment_dir / f"{base:020d}.log"

    @contextmanager
    def locked(self, mode: int) -> Iterator[None]:
        with self._mutex:
            if self._lock_fd is None:
                self.segment_dir.mkdir(parents=True, exist_ok=True)
                self._lock_fd = os.open(self.directory / "append.lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._depth += 1
            try:
                if self._depth == 1:
                    fcntl.flock(self._lock_fd, mode)
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def segments(self) -> Segments:
        try:
            names = os.listdir(self.segment_dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if len(name) == 24 and name.endswith(".log") and name[:20].isdigit():
                with suppress(FileNotFoundError):  # trimmed meanwhile by another process
                    out.append((int(name[:20]), os.stat(self.segment_dir / name).st_size))
        out.sort()
        return out

    def snapshot(self) -> Segments:
        """The segments and their committed sizes; closes files of segments trimmed by others."""
        with self.locked(fcntl.LOCK_SH):
            segs = self.segments()
            alive = {base for base, _ in segs}
            for base in [b for b in self._read_fds if b not in alive]:
                os.close(self._read_fds.pop(base))
            return segs

    def change_marker(self, segs: Segments) -> tuple[int, ...]:
        """Cheap to poll (two stats): changes when a segment is written, created or removed."""
        marker = [os.stat(self.segment_dir).st_mtime_ns]
        if segs:
            with suppress(FileNotFoundError):
                st = os.stat(self.path(segs[-1][0]))
                marker += [st.st_size, st.st_mtime_ns]
        return tuple(marker)

    # -- reading ----------------------------------------------------------------------------------

    def _pread(self, base: int, n: int, pos: int) -> bytes:
        with self._mutex:  # a concurrent snapshot may close the fd: never use it outside the mutex
            fd = self._read_fds.get(base)
            if fd is None:
                try:
                    fd = self._read_fds[base] = os.open(self.path(base), os.O_RDONLY)
                except FileNotFoundError:
                    return b""
            return os.pread(fd, n, pos)

    def _segment_frames(self, base: int, size: int, start: int) -> Iterator[Frame]:
        """Frames of complete, valid batches from `start` (a frame boundary); stops at a torn or bad frame."""
        pos, buf, at = start - base, b"", start - base
        batch: list[Frame] = []
        while pos + HEADER_SIZE <= size:
            if pos + HEADER_SIZE > at + len(buf):
                buf, at = self._pread(base, min(_CHUNK, size - pos), pos), pos
                if len(buf) < HEADER_SIZE:
                    break
            i = pos - at
            length, crc = _LEN_CRC.unpack_from(buf, i)
            seq, appended, expires, rest, key_len = _META.unpack_from(buf, i + _LEN_CRC.size)
            end = pos + HEADER_SIZE + length
            if key_len > length or end > size:
                break
            if end > at + len(buf):
                buf, at, i = self._pread(base, max(_CHUNK, end - pos), pos), pos, 0
                if len(buf) < end - pos:
                    break
            body = buf[i + _LEN_CRC.size:i + HEADER_SIZE + length]
            if zlib.crc32(body) != crc:
                reread = self._reread(base, pos, length)  # a redaction may have been mid-write
                if reread is None:
                    break
                body = reread
            k = _META.size + key_len
            batch.append(Frame(base + pos, seq, appended, expires, rest, body[_META.size:k], body[k:], base + end))
            pos = end
            if rest == 0:
                yield from batch
                batch = []

    def _reread(self, base: int, pos: int, length: int) -> bytes | None:
        """The body of the frame at `pos` read under the shared lock, so an in-place rewrite (which holds the
        exclusive one) is complete; None if it still does not check out (a torn tail, corruption)."""
        with self.locked(fcntl.LOCK_SH):
            raw = self._pread(base, HEADER_SIZE + length, pos)
        if len(raw) < HEADER_SIZE + length:
            return None
        length2, crc = _LEN_CRC.unpack_from(raw, 0)
        body = raw[_LEN_CRC.size:]
        return body if length2 == length and zlib.crc32(body) == crc else None

    def frames(self, start: int, segs: Segments) -> Iterator[Frame]:
        """Visible frames at or after position `start` (a frame boundary or anything before the first)."""
        for base, size in segs:
            if base + size > start:
                yield from self._segment_frames(base, size, max(start, base))

    def read_at(self, offset: int, segs: Segments) -> Frame | None:
        i = bisect_right([base for base, _ in segs], offset) - 1
        if i < 0 or offset >= segs[i][0] + segs[i][1]:
            return None
        frame = next(self._segment_frames(segs[i][0], segs[i][1], offset), None)
        return frame if frame is not None and frame.offset == offset else None

    def tail(self, segs: Segments) -> tuple[int, int, int]:
        """(end of the last complete batch, offset of the last entry or -1, its seq or -1)."""
        if not segs:
            return 0, -1, -1
        with self._mutex:
            first, stop = segs[0][0], segs[-1][0] + segs[-1][1]
            if self._tail is None or not first <= self._tail[0] <= stop:
                self._tail = (first, -1, -1)
                for base, size in reversed(segs):  # the last entry is in the newest segment holding any
                    for f in self._segment_frames(base, size, base):
                        self._tail = (f.end, f.offset, f.seq)
                    if self._tail[1] >= 0:
                        break
            end, last, seq = self._tail
            for f in self.frames(end, segs):
                end, last, seq = f.end, f.offset, f.seq
            self._tail = (end, last, seq)
            return self._tail

    # -- writing ----------------------------------------------------------------------------------

    def append(self, records: list[tuple[bytes, bytes]], ttl_s: float) -> list[bool]:
        """Append records whose key (b"" = none) is not live in the dedup window; see EventStream.append."""
        with self.locked(fcntl.LOCK_EX):
            segs = self.segments()
            now = time.time()
            end, last_seq = self._catch_up(segs, now)
            keys = self._keys if self._keys is not None else {}
            flags: list[bool] = []
            batch: list[tuple[bytes, bytes]] = []
            in_batch: set[bytes] = set()
            for key, data in records:
                duplicate = bool(key) and (key in in_batch or keys.get(key, 0.0) > now)
                flags.append(not duplicate)
                if not duplicate:
                    batch.append((key, data))
                    if key:
                        in_batch.add(key)
            if batch:
                self._write(segs, end, last_seq, batch, now, now + max(0.0, ttl_s))
            return flags

    def _catch_up(self, segs: Segments, now: float) -> tuple[int, int]:
        """Learn what other writers appended since our last look; truncate a crashed writer's torn tail."""
        if self._keys is None:
            self._keys, self._keys_end = {}, 0  # first append of this process: index the retained log
        end = self._keys_end
        for f in self.frames(end, segs):
            if f.key and f.expires_at > now:
                self._remember(f.key, f.expires_at, now)
            end = f.end
        if segs:
            base, size = segs[-1]
            end = max(end, base)
            if end < base + size:
                log.warning("truncating a torn tail of %d bytes in %s (a writer died mid-append)",
                            base + size - end, self.path(base))
                os.truncate(self.path(base), end - base)
                segs[-1] = (base, end - base)
        self._keys_end = end
        return end, self.tail(segs)[2]

    def _write(self, segs: Segments, end: int, last_seq: int, batch: list[tuple[bytes, bytes]],
               now: float, expires: float) -> None:
        created = not segs or segs[-1][1] >= self.segment_bytes
        base, size = (end, 0) if created else segs[-1]
        frames, offsets, pos = [], [], base + size
        for n, (key, data) in enumerate(batch):
            frame = encode(last_seq + 1 + n, now, expires if key else 0.0, len(batch) - 1 - n, key, data)
            frames.append(frame)
            offsets.append(pos)
            pos += len(frame)
        payload = memoryview(b"".join(frames))
        fd = os.open(self.path(base), os.O_WRONLY | (os.O_CREAT | os.O_EXCL if created else 0), 0o644)
        try:
            written = 0
            while written < len(payload):
                written += os.pwrite(fd, payload[written:], size + written)
            os.fsync(fd)
            if created:
                self._fsync_dir()
        except BaseException:
            with suppress(OSError):  # nothing of the batch may stay: readers must never see it
                if created:
                    os.unlink(self.path(base))
                else:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            raise
        finally:
            os.close(fd)
        for key, _ in batch:
            if key:
                self._remember(key, expires, now)
        self._keys_end = pos
        self._tail = (pos, offsets[-1], last_seq + len(batch))

    def _remember(self, key: bytes, expires: float, now: float) -> None:
        """Keys live until their TTL: memory is bounded by the keys appended within one TTL."""
        assert self._keys is not None
        self._keys[key] = expires
        if len(self._keys) > self._prune_at:
            self._keys = {k: e for k, e in self._keys.items() if e > now}
            self._prune_at = max(_PRUNE_MIN, 2 * len(self._keys))

    def _fsync_dir(self) -> None:
        fd = os.open(self.segment_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rewrite(self, changes: list[tuple[Frame, bytes]]) -> int:
        """Overwrite frames' data in place with as many new bytes (redaction): same position, seq and key, a
        new CRC. Frames trimmed or changed since they were read are skipped; returns how many were written.
        Holds the exclusive lock from the writes to the fsync (readers that catch a frame mid-write re-read
        it under the shared lock), and keeps each segment's mtime: retention counts from its newest entry."""
        for frame, data in changes:
            if len(data) != len(frame.data):
                raise ValueError(f"a rewrite must keep the length of entry {frame.offset} ({len(frame.data)} bytes)")
        written = 0
        with self.locked(fcntl.LOCK_EX):
            segs = self.segments()
            by_segment: dict[int, list[tuple[Frame, bytes]]] = {}
            for frame, data in changes:
                i = bisect_right([base for base, _ in segs], frame.offset) - 1
                if i >= 0:
                    by_segment.setdefault(segs[i][0], []).append((frame, data))
            for base, items in by_segment.items():
                path = self.path(base)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                fd = os.open(path, os.O_WRONLY)
                try:
                    for frame, data in items:
                        current = self.read_at(frame.offset, segs)
                        if current is None or current.data != frame.data:
                            continue
                        os.pwrite(fd, encode(frame.seq, frame.appended_at, frame.expires_at, frame.rest,
                                             frame.key, data), frame.offset - base)
                        written += 1
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return written

    def drop(self, removable: Callable[[int, int, float, int], bool]) -> int:
        """Delete the oldest sealed segments while removable(base, end, mtime, retained_bytes); returns entries."""
        removed = 0
        with self.locked(fcntl.LOCK_EX):
            segs = self.segments()
            total = sum(size for _, size in segs)
            for i in range(len(segs) - 1):  # never the newest: it holds the tail and the next base
                base, size = segs[i]
                try:
                    mtime = os.stat(self.path(base)).st_mtime
                except FileNotFoundError:
                    continue
                if not removable(base, base + size, mtime, total):
                    break
                first, following = self.read_at(base, segs), self.read_at(segs[i + 1][0], segs)
                if first is not None and following is not None:
                    removed += following.seq - first.seq
                else:
                    removed += sum(1 for _ in self._segment_frames(base, size, base))
                os.unlink(self.path(base))
                total -= size
            if removed:
                self._fsync_dir()
            self.snapshot()  # close the removed segments' files
        return removed

    def close(self) -> None:
        with self._mutex:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
