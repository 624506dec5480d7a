"""Feature storage in Redis, shared by every feature_svc replica: the reads and writes of FeatureStorage.
The key layout, the generations a bulk load publishes and the error mapping are in redis_generations.py.

Every operation works on the generation this process last saw and checks `ns:current` in the same round
trip (a read) or inside its script (a write), retrying on the new generation if a load switched it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recsys.storage.base import (
    APPLIED_TTL_S,
    Erased,
    Event,
    FeatureStorage,
    ItemRecord,
    OnlineColumns,
    StorageError,
    UserRecord,
    check_history_limit,
)
from recsys.storage.redis_codec import HEADER, dump_json, is_gen, pack_rows, unpack_many
from recsys.storage.redis_generations import MAX_ATTEMPTS, RedisGenerations, View
from recsys.storage.redis_scripts import FORGET_USERS, RECORD_EVENTS, UPSERT

_EVENTS_PER_SCRIPT = 500  # bounds how long one script call blocks the server
_UPSERTS_PER_SCRIPT = 500


class RedisStorage(RedisGenerations, FeatureStorage):
    """Redis-backed store (redis://host:port/db); thread-safe, as redis-py's connection pool is.

    Connection failures and timeouts raise StorageUnavailable naming the URL (password redacted).
    Only connection errors are retried, once, without backoff (a pooled connection may be stale after
    a Redis restart); timeouts are not, because a timed-out event script may already have run.
    """

    def __init__(self, url: str, namespace: str = "recsys", *, connect_timeout: float = 1.0,
                 read_timeout: float = 1.0, retries: int = 1) -> None:
        super().__init__(url, namespace, connect_timeout=connect_timeout, read_timeout=read_timeout, retries=retries)
        self._record_script = self._client.register_script(RECORD_EVENTS)
        self._upsert_script = self._client.register_script(UPSERT)
        self._forget_script = self._client.register_script(FORGET_USERS)

    # -- reads -----------------------------------------------------------------------------------

    def get_users(self, user_ids: Sequence[str], history_limit: int = 0) -> list[UserRecord | None]:
        keep = check_history_limit(history_limit)
        ids = list(user_ids)
        if not ids:
            return []
        start = -keep if keep else 0
        with self._errors("get_users"):
            for _ in range(MAX_ATTEMPTS):
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
            for _ in range(MAX_ATTEMPTS):
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
            for _ in range(MAX_ATTEMPTS):
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

    def _apply_events(self, view: View, chunk: list[Event]) -> int:
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
    def _blank_user(view: View) -> bytes:
        width = len(view.user_feature_names)
        return HEADER.pack(width) + bytes(4 * width) + b"{}"

    def upsert_items(self, items: Sequence[ItemRecord]) -> int:
        def rows(view: View) -> list[tuple[str, bytes, bytes, str]]:
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
        def rows(view: View) -> list[tuple[str, bytes, bytes, str]]:
            width = len(view.user_feature_names)
            return [(view.prefix + "u:" + user_id,
                     pack_rows(np.zeros((1, width), dtype=np.float32), [dict(attributes)])[0],
                     dump_json(dict(attributes)), "1") for user_id, attributes in users]
        return self._upsert("upsert_users", rows)

    def _upsert(self, what: str, rows_for: Callable[[View], list[tuple[str, bytes, bytes, str]]]) -> int:
        """Write upserts chunk by chunk in the current generation; all again if a load switched it."""
        with self._errors(what):
            for _ in range(MAX_ATTEMPTS):
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
            for _ in range(MAX_ATTEMPTS):
                if (view := self._view or self._refresh_view()) is None:
                    return Erased()
                keys = [f"{view.prefix}{tag}:{u}" for u in ids for tag in "uh"]  # record, history per user
                records, items = self._forget_script(keys=[self._current_key, self._last_update_key, *keys],
                                                     args=[view.gen, repr(time.time())])
                if int(records) >= 0:
                    return Erased(int(records), int(items))
                self._refresh_view()
        raise StorageError(f"Redis at {self._safe_url}: generation kept changing during forget_users")


def _layout(view: View, event_types: set[str]) -> str:
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
