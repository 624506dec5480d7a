"""In-process feature storage, the default: numpy matrices plus id -> row indexes in this process.

It is the fastest option, but each replica holds its own copy, so events recorded on one replica
are invisible to the others; use Redis when several replicas must share histories.

Item reads are the hot path (hundreds of candidates per request) and, with a large catalogue, are
bound by cache misses rather than arithmetic. So every random memory access happens inside numpy
loops, where the CPU overlaps the misses, instead of one at a time in the interpreter: ids are
found in an IdIndex (recsys/id_index.py: a hash table probed for the whole batch at once), and
titles and categories live in object arrays gathered in one call.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.feature_tables import FeatureTables, gc_paused
from recsys.id_index import IdIndex
from recsys.storage.base import (
    APPLIED_TTL_S,
    Erased,
    Event,
    FeatureStorage,
    ItemColumns,
    ItemRecord,
    OnlineColumns,
    UserRecord,
    check_history_limit,
)


@dataclass
class _State:
    """Everything one load produced; `load` builds a new one and swaps it in under the lock."""

    user_feature_names: list[str]
    user_index: dict[str, int]
    user_values: np.ndarray  # float32 [capacity >= max(n_users, 1), Fu]; rows >= n_users are zeros
    user_history: list[list[str]]
    user_attributes: list[dict[str, str]]
    item_feature_names: list[str]
    item_index: dict[str, int]
    item_ids: np.ndarray  # object [I]
    item_values: np.ndarray  # float32 [I, Fi]
    item_categories: np.ndarray  # object [I] of tuples, equal tuples shared (catalogues repeat them)
    item_titles: np.ndarray  # object [I]
    item_rows: IdIndex  # item_index for batches of ids
    user_cols: OnlineColumns  # where an event lands in the feature vectors
    item_cols: OnlineColumns
    # event id -> when applied, oldest first: an OrderedDict pops its oldest in O(1), where a dict's front
    # is found by skipping the holes earlier deletions left
    applied: OrderedDict[str, float] = field(default_factory=OrderedDict)

    @classmethod
    def build(cls, t: FeatureTables) -> _State:
        # Copies throughout: record_events mutates in place and must never write into the caller's tables.
        # At least one user row is allocated so a gather with the "missing" index -1 is always valid.
        user_values = np.zeros((max(t.n_users, 1), len(t.user_feature_names)), dtype=np.float32)
        user_values[: t.n_users] = t.user_values
        item_values = np.array(t.item_values, dtype=np.float32)  # copy
        item_ids = t.item_ids.tolist()
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        categories = (shared.setdefault(c, c) for c in map(tuple, t.item_categories))
        return cls(
            user_feature_names=list(t.user_feature_names),
            user_index=dict(zip(t.user_ids.tolist(), range(t.n_users), strict=True)),
            user_values=user_values,
            user_history=[list(h) for h in t.user_history],
            user_attributes=[dict(a) for a in t.user_attributes],
            item_feature_names=list(t.item_feature_names),
            item_index=dict(zip(item_ids, range(t.n_items), strict=True)),
            item_ids=np.fromiter(item_ids, dtype=object, count=t.n_items),
            item_values=item_values,
            item_categories=np.fromiter(categories, dtype=object, count=t.n_items),
            item_titles=np.fromiter(t.item_titles, dtype=object, count=t.n_items),
            item_rows=IdIndex(item_ids),
            user_cols=OnlineColumns(tuple(t.user_feature_names), "user_"),
            item_cols=OnlineColumns(tuple(t.item_feature_names), "item_"),
        )

    def locate_items(self, item_ids: list[str]) -> tuple[np.ndarray, list[bool]]:
        """(row per id, found per id) for a non-empty catalogue; rows of missing ids are arbitrary but valid."""
        rows = self.item_rows.rows(item_ids)
        found = rows >= 0
        return np.where(found, rows, 0), found.tolist()

    def add_user(self, user_id: str) -> int:
        """Create a user with zero features, doubling the matrix when full (amortised O(1))."""
        row = len(self.user_history)  # not len(user_index): a forgotten user's row stays, unindexed
        if row == len(self.user_values):
            grown = np.zeros((2 * len(self.user_values), self.user_values.shape[1]), dtype=np.float32)
            grown[:row] = self.user_values
            self.user_values = grown
        self.user_index[user_id] = row
        self.user_history.append([])
        self.user_attributes.append({})
        return row

    def add_item(self, rec: ItemRecord) -> None:
        """Append one item; rebuilds the id arrays (O(I)), fine for the trickle of new catalogue items."""
        row = len(self.item_ids)
        values = np.zeros(len(self.item_feature_names), dtype=np.float32)
        values[: min(len(rec.values), len(values))] = rec.values[: len(values)]
        self.item_values = np.vstack([self.item_values.reshape(row, len(values)), values[None, :]])
        self.item_ids = np.append(self.item_ids, np.array([rec.item_id], dtype=object))
        self.item_categories = np.append(self.item_categories, np.array([None], dtype=object))
        self.item_categories[row] = tuple(rec.categories)
        self.item_titles = np.append(self.item_titles, np.array([rec.title], dtype=object))
        self.item_index[rec.item_id] = row
        self.item_rows.add(rec.item_id)  # at `row`: both count the items added so far

    def seen(self, event_id: str, now: float) -> bool:
        """Whether `event_id` was applied within APPLIED_TTL_S; otherwise remember it (and forget expired ids)."""
        if event_id in self.applied:
            return True
        applied = self.applied
        applied[event_id] = now
        cutoff = now - APPLIED_TTL_S
        while applied and next(iter(applied.values())) < cutoff:  # expired ids, oldest first: O(1) each
            applied.popitem(last=False)
        return False


class EmbeddedStorage(FeatureStorage):
    """Thread-safe in-process store. One lock covers reads and writes.

    Reads take the lock too: uncontended it costs well under a microsecond, the GIL serialises the
    Python work anyway, and it guarantees a reader never sees half of an event batch or a matrix
    being regrown.
    """

    in_process = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State.build(_empty_tables())
        self._last_update = 0.0

    @property
    def user_feature_names(self) -> list[str]:
        return list(self._state.user_feature_names)

    @property
    def item_feature_names(self) -> list[str]:
        return list(self._state.item_feature_names)

    def load(self, tables: FeatureTables) -> None:
        with gc_paused():  # millions of small lists and tuples; see gc_paused
            state = _State.build(tables)  # the slow part, outside the lock so reads keep being served
        with self._lock:
            self._state = state
            self._last_update = time.time()

    def get_users(self, user_ids: Sequence[str], history_limit: int = 0) -> list[UserRecord | None]:
        keep = check_history_limit(history_limit)
        user_ids = list(user_ids)
        with self._lock:
            s = self._state
            rows = [s.user_index.get(u, -1) for u in user_ids]
            values = s.user_values[rows]  # one gather; the records get views of this private copy
            out: list[UserRecord | None] = []
            for k, (user_id, row) in enumerate(zip(user_ids, rows, strict=True)):
                if row < 0:
                    out.append(None)
                    continue
                history = s.user_history[row]
                out.append(UserRecord(user_id, values[k], history[-keep:] if keep else history[:],
                                      dict(s.user_attributes[row])))
            return out

    def get_items(self, item_ids: Sequence[str]) -> list[ItemRecord | None]:
        ids = list(item_ids)
        with self._lock:
            s = self._state
            if len(s.item_ids) == 0:
                return [None] * len(ids)
            rows, found = s.locate_items(ids)
            values = s.item_values[rows]  # private copy; titles and category tuples are immutable
            categories = s.item_categories[rows].tolist()
            titles = s.item_titles[rows].tolist()
        return [ItemRecord(item_id, v, list(c), title) if ok else None
                for item_id, ok, v, c, title in zip(ids, found, values, categories, titles, strict=True)]

    def get_item_columns(self, item_ids: Sequence[str]) -> ItemColumns:
        ids = list(item_ids)
        with self._lock:
            s = self._state
            n_features = len(s.item_feature_names)
            if len(s.item_ids) == 0 or not ids:
                return ItemColumns.of_records([None] * len(ids), n_features)
            rows, found_list = s.locate_items(ids)
            values = s.item_values[rows]  # private copy; titles and category tuples are immutable
            categories = s.item_categories[rows].tolist()
            titles = s.item_titles[rows].tolist()
        found = np.asarray(found_list, dtype=bool)
        if not found.all():
            values[~found] = np.nan
            for i in np.flatnonzero(~found).tolist():
                titles[i], categories[i] = "", ()
        return ItemColumns(found=found, values=values, titles=titles, categories=categories)

    def record_events(self, events: Sequence[Event]) -> int:
        applied = 0
        events = list(events)
        cap = max(1, int(self.history_cap))
        # The lock is released between chunks: a huge batch never stalls concurrent reads for long.
        for start in range(0, len(events), _EVENTS_PER_LOCK):
            with self._lock:
                s, now = self._state, time.time()
                for ev in events[start:start + _EVENTS_PER_LOCK]:
                    user_id, item_id = ev.user_id, ev.item_id
                    if not user_id or not item_id or (ev.event_id and s.seen(ev.event_id, now)):
                        continue
                    row = s.user_index.get(user_id)
                    if row is None:
                        row = s.add_user(user_id)
                    history = s.user_history[row]
                    new_to_user = item_id not in history
                    if not new_to_user:
                        history.remove(item_id)  # an item occurs at most once in a history
                    history.append(item_id)
                    if len(history) > cap:
                        del history[: len(history) - cap]
                    _update(s.user_values[row], s.user_cols, ev, new_to_user)
                    item_row = s.item_index.get(item_id)
                    if item_row is not None:
                        _update(s.item_values[item_row], s.item_cols, ev, new_to_user)
                    applied += 1
                if applied:
                    self._last_update = now
        return applied

    def upsert_items(self, items: Sequence[ItemRecord]) -> int:
        with self._lock:
            s = self._state
            for rec in items:
                row = s.item_index.get(rec.item_id)
                if row is None:
                    s.add_item(rec)
                else:
                    s.item_categories[row] = tuple(rec.categories)
                    s.item_titles[row] = rec.title
            if items:
                self._last_update = time.time()
        return len(items)

    def upsert_users(self, users: Sequence[tuple[str, dict[str, str]]]) -> int:
        with self._lock:
            s = self._state
            for user_id, attributes in users:
                row = s.user_index.get(user_id)
                if row is None:
                    row = s.add_user(user_id)
                s.user_attributes[row].update(attributes)
            if users:
                self._last_update = time.time()
        return len(users)

    def forget_users(self, user_ids: Sequence[str]) -> Erased:
        erased = Erased()
        with self._lock:
            s = self._state
            for user_id in dict.fromkeys(user_ids):
                row = s.user_index.pop(user_id, None)
                if row is None:
                    continue
                # The row is blanked and left unindexed (rows are positions in the matrix; a reload compacts).
                erased += Erased(1, len(s.user_history[row]))
                s.user_values[row] = 0.0
                s.user_history[row] = []
                s.user_attributes[row] = {}
            if erased.records:
                self._last_update = time.time()
        return erased

    def last_update(self) -> float:
        return self._last_update

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


_EVENTS_PER_LOCK = 32  # events applied per lock hold: ~0.5 ms, the longest a concurrent read waits


def _update(values: np.ndarray, cols: OnlineColumns, ev: Event, new_to_user: bool) -> None:
    """One event's effect on one feature vector (in place), as OnlineColumns documents."""
    for c in cols.plus(ev.event):
        values[c] += 1.0
    if new_to_user and cols.if_new is not None:
        values[cols.if_new] += 1.0
    if ev.timestamp:
        if cols.last_ts is not None and values[cols.last_ts] < ev.timestamp:
            values[cols.last_ts] = ev.timestamp
        if cols.first_ts is not None and values[cols.first_ts] == 0:
            values[cols.first_ts] = ev.timestamp


def _empty_tables() -> FeatureTables:
    return FeatureTables(
        user_ids=[], user_feature_names=[], user_values=[], user_history=[], user_attributes=[],
        item_ids=[], item_feature_names=[], item_values=[], item_categories=[], item_titles=[],
    )
