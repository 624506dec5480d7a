"""The embedded event stream: a durable log on local disk, shared by the processes of one machine.

`file:///abs/dir` (or `file://relative/dir`), optional query `segment_mb` (64), `retention_s` (7 days),
`max_mb` (16384). No server: `recsys up` and `make demo` use it. Layout under the directory:

    segments/, append.lock     the log (recsys/stream/segments.py: framing, torn tails, fsync per batch)
    groups/<group>.json        a group's next position and its pending entries (consumer, deliveries,
                               last delivery time); read-modify-written under groups/<group>.lock and
                               replaced atomically (temp file + fsync + rename)
    deadletter/                dead letters, a log of the same format

Entry ids are global byte offsets, zero padded to 20 digits: string order is log order.

Dedup: the first append of a process indexes the keys of the retained log, and every append first
catches up, under the append lock, with what other processes appended since, so two processes can never
both accept one key. Keys are forgotten when their TTL passes (memory: about 150 bytes per key appended
within one TTL) and when their segment is trimmed before a process (re)builds its index, so the window is
min(dedup_ttl_s, retained log).

Retention (`trim`): whole sealed segments are deleted, oldest first, while every entry in them is
acknowledged by every group AND the segment is older than `retention_s` (by its mtime, i.e. its newest
entry) or the log exceeds `max_mb`. An unacknowledged entry is never deleted, so a stuck group makes the
log grow: the consumer-lag alert exists for this. Dead letters are kept for `retention_s`.

A lost group write (crash before the rename) only rewinds the group to its previous state: entries are
redelivered, never lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from recsys.stream.base import (
    DEFAULT_DEDUP_TTL_S,
    DEFAULT_RETENTION_S,
    DeadLetter,
    Entry,
    EventStream,
    GroupNotFound,
    Redaction,
    StreamError,
    StreamUnavailable,
    check_name,
)
from recsys.stream.segments import MAX_KEY_BYTES, Frame, SegmentLog

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_MAX_BYTES = 16 << 30
# A blocking read polls the log's change marker (two stats): every 10 ms while entries keep coming,
# backing off to 50 ms once it has been idle, so an idle consumer wakes its process 20 times a second
# instead of 100 (each wake-up takes the interpreter lock of a serving process).
_POLL_S = 0.01
_IDLE_POLL_S = 0.05
_REWRITE_BATCH = 1000  # frames rewritten per hold of the append lock: appends wait at most this long


@dataclass(slots=True)
class _Group:
    next: int  # position of the first undelivered entry (0 = the first retained)
    pending: dict[int, list] = field(default_factory=dict)  # offset -> [consumer, deliveries, last delivery]


def _fmt(offset: int) -> str:
    return f"{offset:020d}"


def _parse(entry_id: str) -> int:
    if not isinstance(entry_id, str) or not entry_id.isdigit():
        raise ValueError(f"not an entry id of the disk log: {entry_id!r}")
    return int(entry_id)


class DiskLogStream(EventStream):
    """An EventStream in a local directory; any number of processes may open the same one."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 retention_s: float = DEFAULT_RETENTION_S, max_bytes: int = DEFAULT_MAX_BYTES,
                 url: str | None = None) -> None:
        self.path = Path(directory).absolute()
        self.url = url or f"file://{self.path}"
        self.retention_s = float(retention_s)
        self.max_bytes = int(max_bytes)
        self._groups = self.path / "groups"
        with self._errors("open"):
            for sub in ("segments", "groups", "deadletter/segments"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._log = SegmentLog(self.path, segment_bytes)
        self._dead = SegmentLog(self.path / "deadletter", 8 << 20)
        self._poll_s = _POLL_S  # the blocking read's current poll interval (see _IDLE_POLL_S)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise StreamUnavailable(f"event log at {self.url} unavailable during {what}: {e}") from e

    # -- appending --------------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str | None, bytes]],
               dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S) -> list[bool]:
        encoded = []
        for key, data in records:
            k = key.encode() if key else b""
            if len(k) > MAX_KEY_BYTES:
                raise ValueError(f"dedup key longer than {MAX_KEY_BYTES} bytes")
            encoded.append((k, bytes(data)))
        if not encoded:
            return []
        with self._errors("append"):
            return self._log.append(encoded, dedup_ttl_s)

    # -- groups -----------------------------------------------------------------------------------

    @contextmanager
    def _group(self, group: str, what: str, *, create: bool = False) -> Iterator[tuple[_Group | None, Path]]:
        """The group's state under its lock; the caller saves it with _save when it changed."""
        check_name("group", group)
        with self._errors(what):
            fd = os.open(self._groups / f"{group}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                path = self._groups / f"{group}.json"
                state = self._load(path)
                if state is None and not create:
                    raise GroupNotFound(f"no consumer group {group!r} in the event log at {self.url}")
                yield state, path
            finally:
                os.close(fd)  # releases the flock

    @staticmethod
    def _load(path: Path) -> _Group | None:
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return _Group(int(raw["next"]), {int(o): [c, int(d), float(t)] for o, c, d, t in raw["pending"]})

    @staticmethod
    def _save(path: Path, state: _Group) -> None:
        raw = {"next": state.next, "pending": [[o, *p] for o, p in sorted(state.pending.items())]}
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(json.dumps(raw, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _position(self, position: str, what: str) -> int:
        """A group position: the offset of the first entry to deliver."""
        if position == "begin":
            return 0
        segs = self._log.snapshot()
        if position == "end":
            return self._log.tail(segs)[0]
        offset = _parse(position)
        if segs and offset < segs[0][0]:
            return 0  # trimmed already: everything retained is after it
        frame = self._log.read_at(offset, segs)
        if frame is None:
            raise ValueError(f"{what}: no entry {position!r} in the event log at {self.url}")
        return frame.end

    def ensure_group(self, group: str, start: str = "begin") -> None:
        with self._group(group, "ensure_group", create=True) as (state, path):
            if state is None:
                self._save(path, _Group(self._position(start, "ensure_group")))
                fd = os.open(self._groups, os.O_RDONLY)
                try:
                    os.fsync(fd)  # a group that vanished after a power loss would read from `start` again
                finally:
                    os.close(fd)

    def delete_group(self, group: str) -> None:
        with self._group(group, "delete_group", create=True) as (_, path):
            path.unlink(missing_ok=True)

    def seek(self, group: str, position: str) -> None:
        with self._group(group, "seek") as (_, path):
            self._save(path, _Group(self._position(position, "seek")))

    def read(self, group: str, consumer: str, count: int, block_s: float = 0.0) -> list[Entry]:
        check_name("consumer", consumer)
        if count <= 0:
            return []
        deadline = time.monotonic() + max(0.0, block_s)
        while True:
            with self._group(group, "read") as (state, path):
                assert state is not None
                segs = self._log.snapshot()
                frames: list[Frame] = []
                for frame in self._log.frames(state.next, segs):
                    frames.append(frame)
                    if len(frames) >= count:
                        break
                if frames:
                    self._poll_s = _POLL_S
                    now = time.time()
                    for f in frames:
                        state.pending[f.offset] = [consumer, 1, now]
                    state.next = frames[-1].end
                    self._save(path, state)
                    return [Entry(_fmt(f.offset), f.data, 1) for f in frames]
                marker = self._log.change_marker(segs)
            while (left := deadline - time.monotonic()) > 0 and self._log.change_marker(segs) == marker:
                time.sleep(min(self._poll_s, left))  # two stats: appends by other processes make no other noise
                self._poll_s = min(_IDLE_POLL_S, self._poll_s * 2)
            if time.monotonic() >= deadline:
                return []

    def _redeliver(self, state: _Group, offsets: list[int], consumer: str) -> list[Entry]:
        segs, now, out = self._log.snapshot(), time.time(), []
        for offset in offsets:
            frame = self._log.read_at(offset, segs)
            if frame is None:  # trimmed or unreadable: it can never be processed
                del state.pending[offset]
                continue
            p = state.pending[offset]
            p[:] = [consumer, p[1] + 1, now]
            out.append(Entry(_fmt(offset), frame.data, p[1]))
        return out

    def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        check_name("consumer", consumer)
        with self._group(group, "pending") as (state, path):
            assert state is not None
            mine = sorted(o for o, p in state.pending.items() if p[0] == consumer)[:max(0, count)]
            if not mine:
                return []
            out = self._redeliver(state, mine, consumer)
            self._save(path, state)
            return out

    def claim(self, group: str, consumer: str, min_idle_s: float, count: int) -> list[Entry]:
        check_name("consumer", consumer)
        with self._group(group, "claim") as (state, path):
            assert state is not None
            cutoff = time.time() - min_idle_s
            idle = sorted(o for o, p in state.pending.items() if p[2] <= cutoff)[:max(0, count)]
            if not idle:
                return []
            out = self._redeliver(state, idle, consumer)
            self._save(path, state)
            return out

    def ack(self, group: str, ids: Sequence[str]) -> None:
        offsets = [_parse(i) for i in ids]
        if not offsets:
            return
        with self._group(group, "ack") as (state, path):
            assert state is not None
            if any([state.pending.pop(o, None) is not None for o in offsets]):
                self._save(path, state)

    def dead_letter(self, group: str, entry: Entry, reason: str) -> None:
        check_name("group", group)
        meta = {"entry_id": entry.id, "group": group, "reason": reason, "deliveries": entry.deliveries}
        record = json.dumps(meta).encode() + b"\n" + entry.data
        with self._errors("dead_letter"):  # the key makes a repeat after a crash before the ack a no-op
            self._dead.append([(f"{group}/{entry.id}".encode(), record)], DEFAULT_DEDUP_TTL_S)
        self.ack(group, [entry.id])

    def dead_letters(self, group: str | None = None, count: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        with self._errors("dead_letters"):
            for frame in self._dead.frames(0, self._dead.snapshot()):
                head, _, data = frame.data.partition(b"\n")
                meta = json.loads(head)
                if group is None or meta["group"] == group:
                    out.append(DeadLetter(meta["entry_id"], meta["group"], meta["reason"], data, meta["deliveries"]))
                    if len(out) >= count:
                        break
        return out

    def lag(self, group: str) -> int:
        check_name("group", group)
        with self._errors("lag"):
            state = self._load(self._groups / f"{group}.json")  # replaced atomically: no lock needed
            if state is None:
                raise GroupNotFound(f"no consumer group {group!r} in the event log at {self.url}")
            segs = self._log.snapshot()
            end, _, last_seq = self._log.tail(segs)
            undelivered = 0
            if segs and state.next < end:
                first = next(self._log.frames(max(state.next, segs[0][0]), segs), None)
                undelivered = last_seq - first.seq + 1 if first is not None else 0
            return undelivered + len(state.pending)

    # -- the log itself ---------------------------------------------------------------------------

    def scan(self, after: str | None = None, count: int = 1000) -> list[Entry]:
        out: list[Entry] = []
        with self._errors("scan"):
            start = 0 if after is None else self._position(after, "scan")
            for frame in self._log.frames(start, self._log.snapshot()):
                if len(out) >= count:
                    break
                out.append(Entry(_fmt(frame.offset), frame.data, 1))
        return out

    def redact(self, select: Callable[[bytes], bytes | None]) -> Redaction:
        """In place (positions are byte offsets): each erased frame gets the replacement and a new CRC."""
        counts = []
        with self._errors("redact"):
            for log, dead in ((self._log, False), (self._dead, True)):
                changes: list[tuple[Frame, bytes]] = []
                n = 0
                for frame in log.frames(0, log.snapshot()):
                    # a dead letter is its JSON head, a newline and the entry's data
                    head, sep, data = frame.data.partition(b"\n") if dead else (b"", b"", frame.data)
                    new = select(data)
                    if new is not None:
                        if len(new) != len(data):
                            raise ValueError(f"redact: a replacement must be as long as the entry ({len(data)} "
                                             f"bytes, got {len(new)})")
                        changes.append((frame, head + sep + new))
                    if len(changes) >= _REWRITE_BATCH:
                        n += log.rewrite(changes)
                        changes = []
                counts.append(n + log.rewrite(changes))
        return Redaction(*counts)

    def last_id(self) -> str | None:
        with self._errors("last_id"):
            last = self._log.tail(self._log.snapshot())[1]
        return _fmt(last) if last >= 0 else None

    def before(self, a: str, b: str) -> bool:
        return _parse(a) < _parse(b)

    def length(self) -> int:
        with self._errors("length"):
            segs = self._log.snapshot()
            last_seq = self._log.tail(segs)[2]
            first = next(self._log.frames(0, segs), None)
        return last_seq - first.seq + 1 if first is not None else 0

    def trim(self) -> int:
        now = time.time()
        with self._errors("trim"):
            low = None  # every entry before `low` is acknowledged by every group
            for path in self._groups.glob("*.json"):
                state = self._load(path)
                if state is not None:
                    mark = min([state.next, *state.pending])
                    low = mark if low is None else min(low, mark)

            def removable(base: int, end: int, mtime: float, retained: int) -> bool:
                old = now - mtime >= self.retention_s or retained > self.max_bytes
                return old and (low is None or end <= low)

            removed = self._log.drop(removable)
            self._dead.drop(lambda b, e, mtime, retained: now - mtime >= self.retention_s)
        return removed

    def ping(self) -> bool:
        try:
            return os.access(self.path / "segments", os.R_OK | os.W_OK | os.X_OK)
        except Exception:
            return False

    def close(self) -> None:
        with suppress(OSError):
            self._log.close()
            self._dead.close()


def open_disk_log(url: str) -> DiskLogStream:
    """`file:///abs/dir` or `file://relative/dir`, with optional segment_mb, retention_s, max_mb."""
    parts = urlsplit(url)
    directory = parts.netloc + parts.path
    if not directory:
        raise ValueError(f"the event log URL {url!r} names no directory (file:///abs/dir or file://rel/dir)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"segment_mb", "retention_s", "max_mb"}
    if unknown:
        raise StreamError(f"unknown event log URL parameters {sorted(unknown)} in {url!r}")
    return DiskLogStream(
        directory, url=url,
        segment_bytes=int(float(query.get("segment_mb", DEFAULT_SEGMENT_BYTES / 2**20)) * 2**20),
        retention_s=float(query.get("retention_s", DEFAULT_RETENTION_S)),
        max_bytes=int(float(query.get("max_mb", DEFAULT_MAX_BYTES / 2**20)) * 2**20),
    )
