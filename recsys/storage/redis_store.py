"""Feature storage in Redis, shared by every feature_svc replica.

Key layout (`ns` = namespace, `G` = generation number from INCR `ns:seq`):

    ns:current        the generation readers use; switched atomically at the end of a load
    ns:last_update    unix time of the last load or applied event
    ns:gG:meta        JSON: feature names, created_at, counts
    ns:gG:u:<user>    packed user:  uint32 n | n x float32 | JSON attributes
    ns:gG:h:<user>    list of item ids, oldest first
    ns:gG:i:<item>    packed item:  uint32 n | n x float32 | JSON [categories, title]

A load writes a whole new generation, flips `ns:current`, then deletes the old generation, so
readers never see a half-loaded store. Reads use the generation cached in this process and check
`ns:current` in the same round trip (after the data commands), retrying if a load switched it: old
keys are only deleted after the switch, so a matching pointer proves the data was read intact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from recsys.feature_tables import FeatureTables
from recsys.redis_conn import close, connect, ping, redact
from recsys.storage.base import (
    APPLIED_TTL_S,
    Erased,
    Event,
    FeatureStorage,
    ItemRecord,
    OnlineColumns,
    StorageError,
    StorageUnavailable,
    UserRecord,
    check_history_limit,
)
from recsys.storage.redis_codec import HEADER, dump_json, glob_escape, is_gen, pack_rows, unpack_many
from recsys.storage.redis_scripts import FORGET_USERS, RECORD_EVENTS, UPSERT

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 8  # a read retried this often only under back-to-back reloads (seconds apart in practice)
_LOAD_KEYS_PER_MSET = 1000
_LOAD_COMMANDS_PER_ROUND_TRIP = 50
_HISTORY_ITEMS_PER_RPUSH = 10_000
_EVENTS_PER_SCRIPT = 500  # bounds how long one script call blocks the server
_UPSERTS_PER_SCRIPT = 500

@dataclass(frozen=True)
class _View:
    """One generation as this process last saw it; replaced wholesale, so reading it is thread-safe."""

    gen: str
    prefix: str  # "ns:gG:"
    user_feature_names: list[str]
    item_feature_names: list[str]

    @staticmethod
    def offset(names: list[str], column: int | None) -> int:
        """Byte offset of a feature inside a packed record, -1 when the feature does not exist."""
        return -1 if column is None else HEADER.size + 4 * column


class RedisStorage(FeatureStorage):
    """Redis-backed store (redis://host:port/db); thread-safe, as redis-py's connection pool is.

    Connection failures and timeouts raise StorageUnavailable naming the URL (password redacted).
    Only connection errors are retried, once, without backoff (a pooled connection may be stale after
    a Redis restart); timeouts are not, because a timed-out event script may already have run.
    """

    def __init__(self, url: str, namespace: str = "recsys", *, connect_timeout: float = 1.0,
                 read_timeout: float = 1.0, retries: int = 1) -> None:
        self.url = url
        self.namespace = namespace
        self._safe_url = redact(url)
        self._client = connect(url, connect_timeout, read_timeout, retries)
        self._current_key = f"{namespace}:current"
        self._seq_key = f"{namespace}:seq"
        self._last_update_key = f"{namespace}:last_update"
        self._record_script = self._client.register_script(RECORD_EVENTS)
        self._upsert_script = self._client.register_script(UPSERT)
        self._forget_script = self._client.register_script(FORGET_USERS)
        self._view: _View | None = None

    def __repr__(self) -> str:
        return f"RedisStorage({self._safe_url!r}, namespace={self.namespace!r})"

    # -- feature names ---------------------------------------------------------------------------

    @property
    def user_feature_names(self) -> list[str]:
        view = self._current_view()
        return list(view.user_feature_names) if view else []

    @property
    def item_feature_names(self) -> list[str]:
        view = self._current_view()
        return list(view.item_feature_names) if view else []

    # -- bulk load -------------------------------------------------------------------------------

    def load(self, tables: FeatureTables) -> None:
        tables.validate()
        with self._errors("load"):
            gen = str(self._client.incr(self._seq_key))
            prefix = self._prefix(gen)
            try:
                self._write_generation(prefix, tables)
                tx = self._client.pipeline(transaction=True)
                tx.set(self._current_key, gen, get=True)
                tx.set(self._last_update_key, repr(time.time()))
                old, _ = tx.execute()
            except BaseException:
                # Best effort: do not leak a half-written generation, but never delete it if the switch
                # went through and only its reply was lost (e.g. a read timeout after EXEC).
                with suppress(redis.exceptions.RedisError):
                    if not is_gen(self._client.get(self._current_key), gen):
                        self._delete_prefix(prefix)
                raise
            self._refresh_view()
        if old is not None and old.decode() != gen:
            try:
                self._delete_prefix(self._prefix(old.decode()))
            except redis.exceptions.RedisError as e:  # the load itself succeeded; only space leaks
                log.warning("could not delete old generation %s from %s: %s", old.decode(), self._safe_url, e)

    def _write_generation(self, prefix: str, t: FeatureTables) -> None:
        pipe = self._client.pipeline(transaction=False)
        n_cmds = 0

        def flush_if_full() -> None:
            nonlocal n_cmds
            n_cmds += 1
            if n_cmds >= _LOAD_COMMANDS_PER_ROUND_TRIP:
                pipe.execute()
                n_cmds = 0

        item_payloads = [[c, title] for c, title in zip(t.item_categories, t.item_titles, strict=True)]
        step = _LOAD_KEYS_PER_MSET
        for tag, ids, values, payloads in (("i:", t.item_ids.tolist(), t.item_values, item_payloads),
                                           ("u:", t.user_ids.tolist(), t.user_values, t.user_attributes)):
            for start in range(0, len(ids), step):  # packed per chunk: peak memory stays one chunk
                end = start + step
                keys = [prefix + tag + k for k in ids[start:end]]
                pipe.mset(dict(zip(keys, pack_rows(values[start:end], payloads[start:end]), strict=True)))
                flush_if_full()
        for user_id, history in zip(t.user_ids.tolist(), t.user_history, strict=True):
            for start in range(0, len(history), _HISTORY_ITEMS_PER_RPUSH):
                pipe.rpush(prefix + "h:" + user_id, *history[start:start + _HISTORY_ITEMS_PER_RPUSH])
                flush_if_full()
        pipe.set(prefix + "meta", dump_json({
            "user_feature_names": t.user_feature_names,
            "item_feature_names": t.item_feature_names,
            "created_at": t.created_at,
            "n_users": t.n_users,
            "n_items": t.n_items,
        }))
        pipe.execute()

    def _delete_prefix(self, prefix: str) -> None:
        """UNLINK every key under `prefix` (SCAN-based, so the server never blocks on a huge KEYS)."""
        batch: list[bytes] = []
        for key in self._client.scan_iter(match=glob_escape(prefix) + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                self._client.unlink(*batch)
                batch.clear()
        if batch:
            self._client.unlink(*batch)

    # -- reads -----------------------------------------------------------------------------------

    def get_users(self, user_ids: Sequence[str], history_limit: int = 0) -> list[UserRecord | None]:
        keep = check_history_limit(history_limit)
        ids = list(user_ids)
        if not ids:
            return []
        start = -keep if keep else 0
        with self._errors("get_users"):
            for _ in range(_MAX_ATTEMPTS):
                view = self._view or self._refresh_view()
                if view is None:
                    return [None] * len(ids)
                # MULTI/EXEC: the record and its history come from the same instant (no half event).
                tx = self._client.pipeline(transaction=True)
                tx.mget([view.prefix + "u:" + u for u in ids])
                for u in ids:
                    tx.lrange(view.prefix + "h:" + u, start, -1)
                tx.get(self._current_key)
                replies = tx.execute()
                if is_gen(replies[-1], view.gen):
                    decoded = unpack_many(replies[0], len(view.user_feature_names))
                    return [UserRecord(user_id, d[0], [h.decode() for h in history], d[1]) if d else None
                            for user_id, d, history in zip(ids, decoded, replies[1:-1], strict=True)]
                self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during get_users")

    def get_items(self, item_ids: Sequence[str]) -> list[ItemRecord | None]:
        ids = list(item_ids)
        if not ids:
            return []
        with self._errors("get_items"):
            for _ in range(_MAX_ATTEMPTS):
                view = self._view or self._refresh_view()
                if view is None:
                    return [None] * len(ids)
                pipe = self._client.pipeline(transaction=False)
                pipe.mget([view.prefix + "i:" + i for i in ids])
                pipe.get(self._current_key)  # after the MGET: see the module docstring
                blobs, current = pipe.execute()
                if is_gen(current, view.gen):
                    decoded = unpack_many(blobs, len(view.item_feature_names))
                    return [ItemRecord(item_id, d[0], d[1][0], d[1][1]) if d else None
                            for item_id, d in zip(ids, decoded, strict=True)]
                self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during get_items")

    # -- writes ----------------------------------------------------------------------------------

    def record_events(self, events: Sequence[Event]) -> int:
        valid = [ev for ev in events if ev.user_id and ev.item_id]
        chunks = [valid[i:i + _EVENTS_PER_SCRIPT] for i in range(0, len(valid), _EVENTS_PER_SCRIPT)]
        applied = 0
        with self._errors("record_events"):
            for _ in range(_MAX_ATTEMPTS):
                if not chunks:
                    return applied
                view = self._view or self._refresh_view() or self._create_empty_generation()
                stale = []
                for chunk in chunks:
                    n = self._apply_events(view, chunk)
                    if n < 0:
                        stale.append(chunk)  # a load switched generations: apply it to the new one
                    else:
                        applied += n
                chunks = stale
                if chunks:
                    self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during record_events")

    def _apply_events(self, view: _View, chunk: list[Event]) -> int:
        """One EVALSHA per chunk (called directly: a pipelined script costs a SCRIPT EXISTS round trip)."""
        p = view.prefix
        keys = [self._current_key, self._last_update_key]
        args: list[Any] = [view.gen, self._blank_user(view), repr(time.time()), max(1, int(self.history_cap)),
                           int(APPLIED_TTL_S), _layout(view, {ev.event for ev in chunk})]
        for ev in chunk:
            keys += (p + "u:" + ev.user_id, p + "h:" + ev.user_id, p + "i:" + ev.item_id, p + "e:" + ev.event_id)
            args += (ev.item_id, "1" if ev.event_id else "0", ev.event, int(ev.timestamp or 0))
        return int(self._record_script(keys=keys, args=args))

    @staticmethod
    def _blank_user(view: _View) -> bytes:
        width = len(view.user_feature_names)
        return HEADER.pack(width) + bytes(4 * width) + b"{}"

    def upsert_items(self, items: Sequence[ItemRecord]) -> int:
        def rows(view: _View) -> list[tuple[str, bytes, bytes, str]]:
            width = len(view.item_feature_names)
            out = []
            for rec in items:
                values = np.zeros((1, width), dtype=np.float32)
                n = min(width, len(rec.values))
                values[0, :n] = rec.values[:n]
                payload = [list(rec.categories), rec.title]
                out.append((view.prefix + "i:" + rec.item_id, pack_rows(values, [payload])[0], dump_json(payload), "0"))
            return out
        return self._upsert("upsert_items", rows)

    def upsert_users(self, users: Sequence[tuple[str, dict[str, str]]]) -> int:
        def rows(view: _View) -> list[tuple[str, bytes, bytes, str]]:
            width = len(view.user_feature_names)
            return [(view.prefix + "u:" + user_id,
                     pack_rows(np.zeros((1, width), dtype=np.float32), [dict(attributes)])[0],
                     dump_json(dict(attributes)), "1") for user_id, attributes in users]
        return self._upsert("upsert_users", rows)

    def _upsert(self, what: str, rows_for: Callable[[_View], list[tuple[str, bytes, bytes, str]]]) -> int:
        """Write upserts chunk by chunk in the current generation; all again if a load switched it."""
        with self._errors(what):
            for _ in range(_MAX_ATTEMPTS):
                view = self._view or self._refresh_view() or self._create_empty_generation()
                rows = rows_for(view)
                done, stale = 0, False
                for start in range(0, len(rows), _UPSERTS_PER_SCRIPT):
                    chunk = rows[start:start + _UPSERTS_PER_SCRIPT]
                    args: list[Any] = [view.gen, repr(time.time()), HEADER.size]
                    for _, packed, payload, merge in chunk:
                        args += (packed, payload, merge)
                    n = int(self._upsert_script(keys=[self._current_key, self._last_update_key,
                                                      *(key for key, *_ in chunk)], args=args))
                    if n < 0:
                        stale = True  # a load switched generations: write everything again into the new one
                        break
                    done += n
                if not stale:
                    return done
                self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during {what}")

    def forget_users(self, user_ids: Sequence[str]) -> Erased:
        ids = list(dict.fromkeys(u for u in user_ids if u))
        with self._errors("forget_users"):
            for _ in range(_MAX_ATTEMPTS):
                if (view := self._view or self._refresh_view()) is None:
                    return Erased()
                keys = [f"{view.prefix}{tag}:{u}" for u in ids for tag in "uh"]  # record, history per user
                records, items = self._forget_script(keys=[self._current_key, self._last_update_key, *keys],
                                                     args=[view.gen, repr(time.time())])
                if int(records) >= 0:
                    return Erased(int(records), int(items))
                self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during forget_users")

    def _create_empty_generation(self) -> _View:
        """First write to a never-loaded store: publish an empty generation (unless another process won)."""
        gen = str(self._client.incr(self._seq_key))
        prefix = self._prefix(gen)
        self._client.set(prefix + "meta", dump_json({"user_feature_names": [], "item_feature_names": [],
                                                 "created_at": 0.0, "n_users": 0, "n_items": 0}))
        if not self._client.set(self._current_key, gen, nx=True):
            self._delete_prefix(prefix)
        view = self._refresh_view()
        if view is None:
            raise StorageError(f"Redis at {self._safe_url}: {self._current_key} vanished while creating it")
        return view

    # -- status ----------------------------------------------------------------------------------

    def last_update(self) -> float:
        with self._errors("last_update"):
            raw = self._client.get(self._last_update_key)
        return float(raw) if raw is not None else 0.0

    def loaded_bundle(self) -> str | None:
        with self._errors("loaded_bundle"):
            raw = self._client.get(f"{self.namespace}:bundle")
        return raw.decode() if raw is not None else None

    def mark_loaded_bundle(self, version: str) -> None:
        with self._errors("mark_loaded_bundle"):
            self._client.set(f"{self.namespace}:bundle", version)

    def ping(self) -> bool:
        return ping(self._client)

    def close(self) -> None:
        close(self._client)

    # -- helpers ---------------------------------------------------------------------------------

    def _prefix(self, gen: str) -> str:
        return f"{self.namespace}:g{gen}:"

    def _current_view(self) -> _View | None:
        if self._view is not None:
            return self._view
        with self._errors("reading feature names"):
            return self._refresh_view()

    def _refresh_view(self) -> _View | None:
        """Re-read the current generation and its meta (only on first use and after a switch)."""
        for _ in range(_MAX_ATTEMPTS):
            raw_gen = self._client.get(self._current_key)
            if raw_gen is None:
                self._view = None
                return None
            gen = raw_gen.decode()
            raw_meta = self._client.get(self._prefix(gen) + "meta")
            if raw_meta is None:
                continue  # switched again between the two GETs and the old meta was deleted
            meta = json.loads(raw_meta)
            self._view = _View(gen, self._prefix(gen), meta["user_feature_names"], meta["item_feature_names"])
            return self._view
        raise StorageError(f"Redis at {self._safe_url}: generation {gen} has no meta key")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ReadOnlyError) as e:
            raise StorageUnavailable(f"Redis at {self._safe_url} unavailable during {what}: {e}") from e
        except redis.exceptions.RedisError as e:
            raise StorageError(f"Redis at {self._safe_url} failed during {what}: {e}") from e


def _layout(view: _View, event_types: set[str]) -> str:
    """The byte offsets RECORD_EVENTS updates, as JSON (see OnlineColumns)."""
    out: dict[str, Any] = {"plus": {}}
    sides = (("u", OnlineColumns(tuple(view.user_feature_names), "user_"), view.user_feature_names),
             ("i", OnlineColumns(tuple(view.item_feature_names), "item_"), view.item_feature_names))
    for tag, cols, names in sides:
        out[tag] = {"if_new": view.offset(names, cols.if_new), "last": view.offset(names, cols.last_ts),
                    "first": view.offset(names, cols.first_ts)}
    for etype in event_types | {""}:
        out["plus"][etype] = {tag: [view.offset(names, c) for c in cols.plus(etype)] or {}
                              for tag, cols, names in sides}
    return json.dumps(out)
