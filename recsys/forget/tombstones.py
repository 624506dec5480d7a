"""The forgotten-users registry: one receipt per Users/Forget call, keyed by receipt id, holding the user's
digest (never the raw id), when, who asked and what was erased.

A receipt is written twice: before anything is erased (so a crash halfway still keeps the user's bundle
rows out of every later load) and once more with the counts. Readers only need `forgotten()`: per digest,
the latest time the user was forgotten; data of the user from before that time must not come back.

Backends, by the stream URL they sit beside:
- `file://DIR` (the disk log): DIR/forgotten.jsonl, one JSON object per line, appended under an flock and
  fsynced, so any process of the machine may write; the last line of a receipt wins.
- `redis://...?key=K` (Redis Streams): the hash `K:forgotten`, field = receipt id, value = the JSON.

The digest is SHA-256 of a fixed prefix and the id: it matches the same id everywhere, but like any
unkeyed hash it can be confirmed by whoever guesses the id (docs/operations.md, "Forget a user").
"""

from __future__ import annotations

import abc
import fcntl
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

_PREFIX = b"recsys.forget/1\x00"
FILE_NAME = "forgotten.jsonl"
REDIS_SUFFIX = ":forgotten"
_STREAM_PARAMS = {"key", "max_len", "retention_s", "wait_replicas", "segment_mb", "max_mb"}


@functools.lru_cache(maxsize=1 << 16)  # consumers and exports ask again for the same active users
def user_digest(user_id: str) -> str:
    """The registry's key for a user: hex SHA-256 of a versioned prefix and the UTF-8 id."""
    return hashlib.sha256(_PREFIX + user_id.encode("utf-8", "surrogatepass")).hexdigest()


class TombstonesUnavailable(RuntimeError):
    """The registry cannot be read or written; a loader must not load user data without it."""


@dataclass(frozen=True)
class Tombstone:
    receipt: str
    digest: str
    at_ms: int
    caller: str = ""
    erased: dict[str, int] = field(default_factory=dict)
    done: bool = False  # False: erasure started (or was interrupted); True: the counts are final

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(raw: str | bytes) -> Tombstone:
        d = json.loads(raw)
        return Tombstone(str(d["receipt"]), str(d["digest"]), int(d["at_ms"]), str(d.get("caller", "")),
                         {str(k): int(v) for k, v in d.get("erased", {}).items()}, bool(d.get("done", False)))


class Forgotten:
    """Per digest, the latest time (unix ms) its user was forgotten: what loaders and consumers consult."""

    def __init__(self, latest: dict[str, int] | None = None):
        self.latest: dict[str, int] = dict(latest or {})

    @staticmethod
    def of(tombstones: Iterable[Tombstone]) -> Forgotten:
        latest: dict[str, int] = {}
        for t in tombstones:
            latest[t.digest] = max(t.at_ms, latest.get(t.digest, 0))
        return Forgotten(latest)

    def __len__(self) -> int:
        return len(self.latest)

    def since(self, user_id: str) -> int | None:
        """When the user was last forgotten (ms), None if never; hashes only when anyone was forgotten."""
        return self.latest.get(user_digest(user_id)) if self.latest else None

    def hides(self, user_id: str, at_ms: int) -> bool:
        """Whether data of the user from `at_ms` predates their latest forget (and must stay erased)."""
        since = self.since(user_id)
        return since is not None and at_ms <= since

    def add(self, user_id: str, at_ms: int) -> None:
        digest = user_digest(user_id)
        self.latest[digest] = max(at_ms, self.latest.get(digest, 0))

    def after(self, through_ms: int) -> Forgotten:
        """Only users forgotten after `through_ms` (a bundle trained with the registry up to then holds
        none of the earlier ones' forgotten data)."""
        return Forgotten({d: t for d, t in self.latest.items() if t > through_ms})


class Tombstones(abc.ABC):
    url: str  # without a password

    @abc.abstractmethod
    def record(self, tombstone: Tombstone) -> None:
        """Write (or overwrite) the receipt durably; TombstonesUnavailable if it cannot."""

    @abc.abstractmethod
    def receipts(self) -> list[Tombstone]:
        """Every receipt in its latest state, oldest first."""

    def forgotten(self) -> Forgotten:
        return Forgotten.of(self.receipts())

    def close(self) -> None:  # noqa: B027  (nothing to release for a file)
        """Release connections."""

    def __enter__(self) -> Tombstones:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileTombstones(Tombstones):
    def __init__(self, directory: str | os.PathLike[str]):
        self.path = Path(directory).absolute() / FILE_NAME
        self.url = f"file://{self.path}"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise TombstonesUnavailable(f"forgotten-users registry {self.path} unavailable during {what}: {exc}") \
                from exc

    def record(self, tombstone: Tombstone) -> None:
        line = (tombstone.to_json() + "\n").encode()
        with self._errors("record"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line per writer, whatever the process
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def receipts(self) -> list[Tombstone]:
        with self._errors("read"):
            try:
                text = self.path.read_bytes().decode("utf-8", "replace")
            except FileNotFoundError:
                return []
        latest: dict[str, Tombstone] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                t = Tombstone.from_json(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash mid-write: its receipt's other line (or none) stands
            latest.pop(t.receipt, None)
            latest[t.receipt] = t
        return sorted(latest.values(), key=lambda t: t.at_ms)


class RedisTombstones(Tombstones):
    def __init__(self, url: str, key: str):
        from recsys.redis_conn import connect, redact

        self.key = key
        self.url = redact(url)
        self._client = connect(url, 2.0, 2.0)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise TombstonesUnavailable(f"forgotten-users registry {self.key!r} at {self.url} unavailable during "
                                        f"{what}: {exc}") from exc

    def record(self, tombstone: Tombstone) -> None:
        with self._errors("record"):
            self._client.hset(self.key, tombstone.receipt, tombstone.to_json())

    def receipts(self) -> list[Tombstone]:
        with self._errors("read"):
            raw = list(self._client.hscan_iter(self.key, count=1000))
        return sorted((Tombstone.from_json(v) for _, v in raw), key=lambda t: t.at_ms)

    def close(self) -> None:
        from recsys.redis_conn import close

        close(self._client)


def open_tombstones(stream_url: str) -> Tombstones:
    """The registry beside the event stream `stream_url` ("" = the stream's default)."""
    from recsys.stream import DEFAULT_STREAM_URL

    url = (stream_url or "").strip() or DEFAULT_STREAM_URL
    parts = urlsplit(url)
    if parts.scheme == "file":
        directory = parts.netloc + parts.path
        if not directory:
            raise ValueError(f"the event log URL {url!r} names no directory")
        return FileTombstones(directory)
    if parts.scheme in ("redis", "rediss", "unix"):
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        key = query.get("key", "recsys:events") + REDIS_SUFFIX
        client_url = urlunsplit(parts._replace(query=urlencode({k: v for k, v in query.items()
                                                                if k not in _STREAM_PARAMS})))
        return RedisTombstones(client_url, key)
    raise ValueError(f"no forgotten-users registry for stream URL scheme {parts.scheme!r}")
