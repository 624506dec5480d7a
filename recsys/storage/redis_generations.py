"""The generations of the Redis feature store (recsys/storage/redis_store.py): connection, key layout, the
view of the current generation, bulk loads that publish a whole new generation, and error mapping.

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
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass

import redis

from recsys.feature_tables import FeatureTables
from recsys.redis_conn import close, connect, ping, redact, translated
from recsys.storage.base import StorageError, StorageUnavailable
from recsys.storage.redis_codec import HEADER, dump_json, glob_escape, is_gen, pack_rows

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # a read retried this often only under back-to-back reloads (seconds apart in practice)
_LOAD_KEYS_PER_MSET = 1000
_LOAD_COMMANDS_PER_ROUND_TRIP = 50
_HISTORY_ITEMS_PER_RPUSH = 10_000


@dataclass(frozen=True)
class View:
    """One generation as this process last saw it; replaced wholesale, so reading it is thread-safe."""

    gen: str
    prefix: str  # "ns:gG:"
    user_feature_names: list[str]
    item_feature_names: list[str]

    @staticmethod
    def offset(names: list[str], column: int | None) -> int:
        """Byte offset of a feature inside a packed record, -1 when the feature does not exist."""
        return -1 if column is None else HEADER.size + 4 * column


class RedisGenerations:
    """What every Redis store operation stands on: the client, the namespace's keys and the generation this
    process reads and writes (`_view`), switched by `load`. RedisStorage adds the reads and writes."""

    def __init__(self, url: str, namespace: str = "recsys", *, connect_timeout: float = 1.0,
                 read_timeout: float = 1.0, retries: int = 1) -> None:
        self.url = url
        self.namespace = namespace
        self._safe_url = redact(url)
        self._client = connect(url, connect_timeout, read_timeout, retries)
        self._current_key = f"{namespace}:current"
        self._seq_key = f"{namespace}:seq"
        self._last_update_key = f"{namespace}:last_update"
        self._view: View | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe_url!r}, namespace={self.namespace!r})"

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

    def _create_empty_generation(self) -> View:
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

    def _current_view(self) -> View | None:
        if self._view is not None:
            return self._view
        with self._errors("reading feature names"):
            return self._refresh_view()

    def _refresh_view(self) -> View | None:
        """Re-read the current generation and its meta (only on first use and after a switch)."""
        for _ in range(MAX_ATTEMPTS):
            raw_gen = self._client.get(self._current_key)
            if raw_gen is None:
                self._view = None
                return None
            gen = raw_gen.decode()
            raw_meta = self._client.get(self._prefix(gen) + "meta")
            if raw_meta is None:
                continue  # switched again between the two GETs and the old meta was deleted
            meta = json.loads(raw_meta)
            self._view = View(gen, self._prefix(gen), meta["user_feature_names"], meta["item_feature_names"])
            return self._view
        raise StorageError(f"Redis at {self._safe_url}: generation {gen} has no meta key")

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return translated(self._safe_url, what, StorageUnavailable, StorageError)
