"""The event stream in Redis Streams, for deployments whose consumers run on several machines.

`redis://host:port/db?key=recsys:events` (also rediss://, unix://), optional query parameters
`max_len` (XADD MAXLEN ~ bound, 10,000,000), `retention_s` (7 days), `wait_replicas` (0). Keys:

    <key>               the stream; entries have one field `d` (the payload); ids are Redis ids "ms-seq"
    <key>:seen:<dedup>  one per dedup key, expiring after dedup_ttl_s (SET NX semantics, checked in Lua)
    <key>:dead          dead letters: fields entry_id, group, reason, deliveries, data

Durability: an append is as durable as Redis makes it. Production Redis must run with `appendonly yes`
and `appendfsync always` (or accept losing up to 1 s of accepted events with `everysec`); the first
append logs a warning when `CONFIG GET appendonly` says no (a CONFIG error, e.g. on managed Redis, is
ignored). `wait_replicas=N` also WAITs for N replicas; a shortfall raises StreamUnavailable although
the primary holds the batch, so the producer's retry is answered as duplicates by key.

Retention: XADD trims approximately to `max_len` entries regardless of groups, and `trim()` does
XTRIM MINID at the oldest entry still pending or undelivered by any group, bounded by the age limit.
Entries a group has not read yet are lost for that group when the MAXLEN bound removes them: the
consumer-lag alert exists for this. Redis Cluster is not supported (the seen keys are not hash-tagged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis

from recsys.redis_conn import TRANSIENT, close, connect, ping, redact, translated
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

log = logging.getLogger(__name__)

DEFAULT_KEY = "recsys:events"
DEFAULT_MAX_LEN = 10_000_000
_DEAD_MAX_LEN = 1_000_000
_BLOCK_SLICE_S = 0.5  # blocking reads are sliced below the 1 s socket timeout
_OWN_PARAMS = {"key", "max_len", "retention_s", "wait_replicas"}

# Decides every record first (reads only), then writes, so a batch is all or nothing: the only error
# left after the first write would be an out-of-memory one, and Redis refuses a script's first write then.
# KEYS: stream. ARGV: seen-key prefix, ttl ms, max_len, then (dedup key or "", payload) per record.
_APPEND_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'stream' then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is not a stream') end
local n = (#ARGV - 3) / 2
local flags, batch = {}, {}
for i = 1, n do
  local k = ARGV[2 + 2 * i]
  flags[i] = 1
  if k ~= '' then
    if batch[k] or redis.call('EXISTS', ARGV[1] .. k) == 1 then flags[i] = 0 else batch[k] = true end
  end
end
for i = 1, n do
  if flags[i] == 1 then
    local k = ARGV[2 + 2 * i]
    if k ~= '' then redis.call('SET', ARGV[1] .. k, '1', 'PX', ARGV[2]) end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[3 + 2 * i])
  end
end
return flags
"""


def _sid(raw: bytes | str) -> tuple[int, int]:
    s = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = s.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValueError(f"not a Redis stream id: {s!r}") from None


def _s(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisStream(EventStream):
    """An EventStream on one Redis stream key; thread-safe (redis-py's connection pool)."""

    def __init__(self, url: str, *, key: str | None = None, max_len: int | None = None,
                 retention_s: float | None = None, wait_replicas: int | None = None,
                 timeout_s: float = 1.0) -> None:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.key = key or query.get("key", DEFAULT_KEY)
        self.max_len = int(max_len if max_len is not None else query.get("max_len", DEFAULT_MAX_LEN))
        self.retention_s = float(retention_s if retention_s is not None
                                 else query.get("retention_s", DEFAULT_RETENTION_S))
        self.wait_replicas = int(wait_replicas if wait_replicas is not None else query.get("wait_replicas", 0))
        self.url = redact(url)
        self._timeout_s = timeout_s
        client_url = urlunsplit(parts._replace(query=urlencode({k: v for k, v in query.items()
                                                                if k not in _OWN_PARAMS})))
        self._client = connect(client_url, timeout_s, timeout_s)
        self._append_script = self._client.register_script(_APPEND_LUA)
        self._checked_durability = False
        self._dead_key = f"{self.key}:dead"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        with translated(self.url, what, StreamUnavailable, StreamError):
            try:
                yield
            except redis.exceptions.ResponseError as e:  # a command Redis refused (not a read-only replica)
                if isinstance(e, TRANSIENT):
                    raise
                if "NOGROUP" in str(e):
                    raise GroupNotFound(f"no consumer group on {self.key!r} at {self.url} ({what}): {e}") from e
                raise StreamError(f"Redis at {self.url} refused {what}: {e}") from e

    def _check_durability(self) -> None:
        try:
            if self._client.config_get("appendonly").get("appendonly") != "yes":
                log.warning("Redis at %s runs without appendonly: accepted events are lost if it restarts "
                            "(use appendonly yes, appendfsync always)", self.url)
        except redis.exceptions.ResponseError:
            pass  # CONFIG is disabled on many managed services
        self._checked_durability = True  # not before: an unreachable Redis is checked on the next append

    # -- appending --------------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str | None, bytes]],
               dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S) -> list[bool]:
        if not records:
            return []
        args: list[Any] = [f"{self.key}:seen:", max(1, int(dedup_ttl_s * 1000)), self.max_len]
        for key, data in records:
            args += [key or "", bytes(data)]
        with self._errors("append"):
            if not self._checked_durability:
                self._check_durability()
            flags = self._append_script(keys=[self.key], args=args)
            if self.wait_replicas > 0 and any(flags):
                # half the socket timeout: WAIT must answer before the socket gives up on it
                acked = self._client.wait(self.wait_replicas, max(1, int(self._timeout_s * 500)))
                if acked < self.wait_replicas:
                    raise StreamUnavailable(f"only {acked} of {self.wait_replicas} replicas of {self.url} "
                                            "acknowledged the append")
        return [bool(f) for f in flags]

    # -- groups -----------------------------------------------------------------------------------

    @staticmethod
    def _start_id(position: str) -> str:
        if position == "begin":
            return "0"
        if position == "end":
            return "$"
        _sid(position)
        return position

    def ensure_group(self, group: str, start: str = "begin") -> None:
        check_name("group", group)
        try:
            with self._errors("ensure_group"):
                self._client.xgroup_create(self.key, group, self._start_id(start), mkstream=True)
        except StreamError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _group_info(self, group: str) -> dict[str, Any]:
        try:
            groups = self._client.xinfo_groups(self.key)
        except redis.exceptions.ResponseError:  # "no such key": no stream, so no group
            groups = []
        for info in groups:
            if _s(info["name"]) == group:
                return info
        raise GroupNotFound(f"no consumer group {group!r} on {self.key!r} at {self.url}")

    def delete_group(self, group: str) -> None:
        check_name("group", group)
        try:
            with self._errors("delete_group"):
                self._client.xgroup_destroy(self.key, group)
        except StreamError as e:
            if "no such key" not in str(e).lower() and "requires the key to exist" not in str(e).lower():
                raise

    def seek(self, group: str, position: str) -> None:
        check_name("group", group)
        start = self._start_id(position)
        with self._errors("seek"):
            self._group_info(group)
            tx = self._client.pipeline(transaction=True)  # recreate: SETID alone would keep the pending list
            tx.xgroup_destroy(self.key, group)
            tx.xgroup_create(self.key, group, start, mkstream=True)
            tx.execute()

    def _entries(self, reply: Any, group: str, deliveries: dict[bytes, int] | None = None) -> list[Entry]:
        out, gone = [], []
        for _, messages in reply or []:
            for raw_id, fields in messages:
                if not fields or b"d" not in fields:
                    gone.append(raw_id)  # trimmed while pending: it can never be processed
                    continue
                n = deliveries.get(raw_id, 1) if deliveries is not None else 1
                out.append(Entry(_s(raw_id), fields[b"d"], n))
        if gone:
            self._client.xack(self.key, group, *gone)
        return out

    def read(self, group: str, consumer: str, count: int, block_s: float = 0.0) -> list[Entry]:
        check_name("group", group)
        check_name("consumer", consumer)
        if count <= 0:
            return []
        deadline = time.monotonic() + max(0.0, block_s)
        with self._errors("read"):
            while True:
                remaining = deadline - time.monotonic()
                block = max(1, int(min(remaining, _BLOCK_SLICE_S) * 1000)) if remaining > 0 else None
                reply = self._client.xreadgroup(group, consumer, {self.key: ">"}, count=count, block=block)
                entries = self._entries(reply, group)
                if entries or time.monotonic() >= deadline:
                    return entries

    def pending(self, group: str, consumer: str, count: int) -> list[Entry]:
        check_name("group", group)
        check_name("consumer", consumer)
        if count <= 0:
            return []
        with self._errors("pending"):
            tx = self._client.pipeline(transaction=True)
            tx.xreadgroup(group, consumer, {self.key: "0"}, count=count)
            tx.xpending_range(self.key, group, "-", "+", count, consumername=consumer)
            reply, summary = tx.execute()
            counts = {p["message_id"]: int(p["times_delivered"]) for p in summary}
            return self._entries(reply, group, counts)

    def claim(self, group: str, consumer: str, min_idle_s: float, count: int) -> list[Entry]:
        check_name("group", group)
        check_name("consumer", consumer)
        if count <= 0:
            return []
        claimed: list[tuple[bytes, dict]] = []
        cursor: bytes | str = "0-0"
        with self._errors("claim"):
            for _ in range(100):  # each call examines at most 10 x count pending entries
                reply = self._client.xautoclaim(self.key, group, consumer, int(min_idle_s * 1000),
                                                start_id=cursor, count=count - len(claimed))
                cursor, messages = reply[0], reply[1]
                claimed += [(i, f) for i, f in messages if i is not None]
                if len(reply) > 2 and reply[2]:
                    self._client.xack(self.key, group, *reply[2])  # deleted while pending (Redis 7)
                if _s(cursor) == "0-0" or len(claimed) >= count:
                    break
            if not claimed:
                return []
            pipe = self._client.pipeline(transaction=False)
            for raw_id, _ in claimed:
                pipe.xpending_range(self.key, group, raw_id, raw_id, 1)
            counts = {p["message_id"]: int(p["times_delivered"]) for rows in pipe.execute() for p in rows}
            return self._entries([(self.key, claimed)], group, counts)

    def ack(self, group: str, ids: Sequence[str]) -> None:
        check_name("group", group)
        if ids:
            with self._errors("ack"):
                self._client.xack(self.key, group, *ids)

    def dead_letter(self, group: str, entry: Entry, reason: str) -> None:
        check_name("group", group)
        with self._errors("dead_letter"):
            tx = self._client.pipeline(transaction=True)
            tx.xadd(self._dead_key, {"entry_id": entry.id, "group": group, "reason": reason,
                                     "deliveries": entry.deliveries, "data": entry.data},
                    maxlen=_DEAD_MAX_LEN, approximate=True)
            tx.xack(self.key, group, entry.id)
            tx.execute()

    def dead_letters(self, group: str | None = None, count: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        start = "-"
        with self._errors("dead_letters"):
            while len(out) < count:
                rows = self._client.xrange(self._dead_key, start, "+", count=1000)
                for _, f in rows:
                    if group is None or _s(f[b"group"]) == group:
                        out.append(DeadLetter(_s(f[b"entry_id"]), _s(f[b"group"]), _s(f[b"reason"]),
                                              f[b"data"], int(f[b"deliveries"])))
                if len(rows) < 1000:
                    break
                start = "(" + _s(rows[-1][0])
        return out[:count]

    def lag(self, group: str) -> int:
        check_name("group", group)
        with self._errors("lag"):
            info = self._group_info(group)
            pending = int(info["pending"])
            if info.get("lag") is not None:
                return int(info["lag"]) + pending
            undelivered, start = 0, "(" + _s(info["last-delivered-id"])  # lag unknown after some trims
            while True:
                rows = self._client.xrange(self.key, start, "+", count=10_000)
                undelivered += len(rows)
                if len(rows) < 10_000:
                    return undelivered + pending
                start = "(" + _s(rows[-1][0])

    # -- the stream itself ------------------------------------------------------------------------

    def scan(self, after: str | None = None, count: int = 1000) -> list[Entry]:
        start = "-" if after is None else "(" + "-".join(map(str, _sid(after)))
        with self._errors("scan"):
            rows = self._client.xrange(self.key, start, "+", count=count)
        return [Entry(_s(i), f[b"d"], 1) for i, f in rows]

    def redact(self, select: Callable[[bytes], bytes | None]) -> Redaction:
        """XDEL of the selected entries (a pending one is acked when next delivered or claimed)."""
        counts = []
        with self._errors("redact"):
            for key, field in ((self.key, b"d"), (self._dead_key, b"data")):
                n, start = 0, "-"
                while True:
                    rows = self._client.xrange(key, start, "+", count=1000)
                    doomed = [raw_id for raw_id, f in rows if field in f and select(f[field]) is not None]
                    if doomed:
                        n += int(self._client.xdel(key, *doomed))
                    if len(rows) < 1000:
                        break
                    start = "(" + _s(rows[-1][0])
                counts.append(n)
        return Redaction(*counts)

    def last_id(self) -> str | None:
        with self._errors("last_id"):
            rows = self._client.xrevrange(self.key, "+", "-", count=1)
        return _s(rows[0][0]) if rows else None

    def before(self, a: str, b: str) -> bool:
        return _sid(a) < _sid(b)

    def length(self) -> int:
        with self._errors("length"):
            return int(self._client.xlen(self.key))

    def trim(self) -> int:
        with self._errors("trim"):
            seconds, micros = self._client.time()
            now_ms = seconds * 1000 + micros // 1000
            bound = (max(0, now_ms - int(self.retention_s * 1000)), 0)  # server clock: ids are server time
            try:
                groups = self._client.xinfo_groups(self.key)
            except redis.exceptions.ResponseError:
                return 0  # no stream
            for info in groups:
                low = _sid(info["last-delivered-id"])
                low = (low[0], low[1] + 1)  # everything up to the last delivered id was delivered
                if int(info["pending"]):
                    oldest = self._client.xpending(self.key, _s(info["name"]))["min"]
                    low = min(low, _sid(oldest))
                bound = min(bound, low)
            removed = int(self._client.xtrim(self.key, minid=f"{bound[0]}-{bound[1]}", approximate=False))
            dead_bound = max(0, now_ms - int(self.retention_s * 1000))
            self._client.xtrim(self._dead_key, minid=f"{dead_bound}-0", approximate=False)
        return removed

    def ping(self) -> bool:
        return ping(self._client)

    def close(self) -> None:
        close(self._client)


def open_redis_stream(url: str) -> RedisStream:
    return RedisStream(url)
