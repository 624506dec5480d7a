"""The event stream contract: record types and the abstract `EventStream`.

Producers (Feedback/Send, the exposure log) append; consumers (online features, new items, the
per-user cache, training export) read through consumer groups with at-least-once delivery. Every
backend must pass tests/stream/test_stream_contract.py, so deployments can swap the embedded disk log
for Redis Streams by URL alone.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_DEDUP_TTL_S = 7 * 86400.0
DEFAULT_RETENTION_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Entry:
    id: str  # backend position; opaque but totally ordered within a stream (compare with stream.before)
    data: bytes
    deliveries: int = 1  # times delivered to this consumer group (1 on first delivery)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    group: str
    reason: str
    data: bytes
    deliveries: int


@dataclass(frozen=True, slots=True)
class Redaction:
    """What EventStream.redact erased: retained entries and dead letters."""

    entries: int = 0
    dead_letters: int = 0


class StreamError(RuntimeError):
    """Base class of event stream failures."""


class StreamUnavailable(StreamError):
    """The backend cannot be reached or cannot persist; the producer answers UNAVAILABLE and retries."""


class GroupNotFound(StreamError):
    """The consumer group does not exist (never created, or lost with a non-persistent Redis)."""


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}\Z")


def check_name(kind: str, name: str) -> str:
    """Group and consumer names become file names in the disk log: keep them to a safe alphabet everywhere."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name must match {_NAME.pattern!r}, got {name!r}")
    return name



class EventStream(abc.ABC):
    """A durable, totally ordered log of opaque records with consumer groups (at-least-once delivery).

    Every method is thread-safe. Failures to reach or persist raise StreamUnavailable naming `url`
    (password redacted); using a group that does not exist raises GroupNotFound.
    """

    url: str  # redacted

    @abc.abstractmethod
    def append(self, records: Sequence[tuple[str | None, bytes]],
               dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S) -> list[bool]:
        """Atomically and durably append every record whose key was not appended within the last dedup_ttl_s.

        The key is an idempotency key such as an event id; None (or "") means no dedup. Returns, per
        record, True if appended, False if it was a duplicate (also of an earlier record of the same
        batch). All or nothing: on failure raise StreamUnavailable and nothing of the batch is appended
        nor remembered as seen. If the reply itself is lost (timeout, crash after the write) the batch may
        be appended; retrying with the same keys is then answered as duplicates, which is why keys exist.
        """

    @abc.abstractmethod
    def ensure_group(self, group: str, start: str = "begin") -> None:
        """Create `group` reading from "begin" (all retained), "end" (only new) or after an entry id.

        A no-op if the group exists, so every consumer process may call it at start.
        """

    @abc.abstractmethod
    def delete_group(self, group: str) -> None:
        """Remove a group and its pending entries (a replica's own group when it shuts down); no-op if absent.

        A group nobody reads keeps its lag growing and, for Redis, pins retention: delete what is retired.
        """

    @abc.abstractmethod
    def seek(self, group: str, position: str) -> None:
        """Move a group to "begin", "end" or an entry id (the next read returns entries after it).

        Clears the group's pending entries (replaying from a position is a deliberate operator action).
        """

    @abc.abstractmethod
    def read(self, group: str, consumer: str, count: int, block_s: float = 0.0) -> list[Entry]:
        """Up to `count` never-delivered entries, now pending for `consumer`; waits up to block_s for some."""

    @abc.abstractmethod
    def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        """The consumer's own delivered-but-unacked entries, oldest first (a restarted consumer re-reads these).

        Each call counts as a delivery: `deliveries` is incremented.
        """

    @abc.abstractmethod
    def claim(self, group: str, consumer: str, min_idle_s: float, count: int) -> list[Entry]:
        """Take over pending entries idle for >= min_idle_s (their consumer died); increments deliveries."""

    @abc.abstractmethod
    def ack(self, group: str, ids: Sequence[str]) -> None:
        """Mark entries processed by the group; unknown or already acked ids are ignored."""

    @abc.abstractmethod
    def dead_letter(self, group: str, entry: Entry, reason: str) -> None:
        """Copy `entry` to the dead-letter stream, then ack it (a crash in between only repeats the copy)."""

    @abc.abstractmethod
    def dead_letters(self, group: str | None = None, count: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first, of one group or of all."""

    @abc.abstractmethod
    def lag(self, group: str) -> int:
        """Entries the group has not acknowledged yet: undelivered + pending."""

    @abc.abstractmethod
    def scan(self, after: str | None = None, count: int = 1000) -> list[Entry]:
        """Read-only, no group: up to `count` entries after `after` (None = from the first retained); for export."""

    @abc.abstractmethod
    def redact(self, select: Callable[[bytes], bytes | None]) -> Redaction:
        """Erase every retained entry and dead letter for which `select(data)` returns a replacement.

        Entries are examined in stream order, those appended during the call possibly not. A backend
        deletes an erased entry (Redis) or overwrites it in place with the replacement, which must then be
        exactly as long as the data (the disk log, whose positions are byte offsets: ValueError otherwise).
        Either way no consumer, scan or dead-letter listing returns the old data afterwards, positions and
        the other entries stay as they were, and a pending erased entry is acked (deleted) or delivered as
        its replacement. For Users/Forget (docs/operations.md); cost: one pass over the retained log.
        """

    @abc.abstractmethod
    def last_id(self) -> str | None:
        """The id of the newest entry, None when the stream is empty."""

    @abc.abstractmethod
    def before(self, a: str, b: str) -> bool:
        """Whether entry id `a` is strictly earlier than `b`."""

    @abc.abstractmethod
    def length(self) -> int:
        """Entries retained."""

    @abc.abstractmethod
    def trim(self) -> int:
        """Apply the retention policy now; returns the entries removed. Never removes unacknowledged entries."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers now; never raises (for health checks)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release files and connections; the stream must not be used afterwards."""

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
