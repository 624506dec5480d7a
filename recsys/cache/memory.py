"""The embedded list cache: bounded LRUs in this process, for a single replica (or per-replica caching).

Entries, per-user interaction states and per-user event ids are all bounded. Evicting a user's state
loses its generation, so an evicted state raises a global floor (`_epoch`) to its generation +
max_new: a state created later starts there, which makes every list and every in-flight computation
of the evicted user invalid instead of silently missing the interactions that were forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from recsys.cache.base import (
    DEFAULT_MAX_NEW,
    DEFAULT_TTL_S,
    NOTED_ITEMS_FACTOR,
    CachedList,
    CacheHit,
    ListCache,
    MissReason,
    check_settings,
    check_user,
)

DEFAULT_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _UserState:
    generation: int
    # item -> generation of its latest note; insertion order = increasing generation (re-notes move to the end)
    noted: OrderedDict[str, int] = field(default_factory=OrderedDict)
    events: OrderedDict[str, None] = field(default_factory=OrderedDict)  # recent event ids, oldest first


class MemoryListCache(ListCache):
    """Thread-safe (one lock); every operation is O(1) or O(length of the list / events / result)."""

    in_process = True

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, max_new: int = DEFAULT_MAX_NEW, *,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_users: int | None = None,
                 max_events_per_user: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self.max_new = check_settings(ttl_s, max_new)
        self.max_entries = int(max_entries)
        self.max_users = int(max_users) if max_users is not None else self.max_entries
        self.max_events_per_user = (int(max_events_per_user) if max_events_per_user is not None
                                    else max(64, 8 * self.max_new))
        if min(self.max_entries, self.max_users, self.max_events_per_user) < 1:
            raise ValueError("max_entries, max_users and max_events_per_user must be >= 1")
        self._keep_noted = NOTED_ITEMS_FACTOR * self.max_new
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[CachedList, float]] = OrderedDict()  # -> (entry, expires)
        self._users: OrderedDict[str, _UserState] = OrderedDict()
        self._epoch = 0  # generation of users without state; see the module docstring

    def __repr__(self) -> str:
        return (f"MemoryListCache(ttl_s={self.ttl_s}, max_new={self.max_new}, max_entries={self.max_entries}, "
                f"max_users={self.max_users})")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, fingerprint: str) -> CacheHit | MissReason:
        key = (check_user(user_id), fingerprint)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return "miss"
            entry, expires = found
            if self._clock() >= expires:
                del self._entries[key]
                return "expired"
            state = self._touch_user(user_id)
            current = state.generation if state is not None else self._epoch
            if not self._valid(entry.generation, current):
                del self._entries[key]
                return "invalidated"
            self._entries.move_to_end(key)
            since: list[str] = []
            recent = frozenset(state.noted) if state is not None else frozenset()
            if state is not None:
                for item, gen in reversed(state.noted.items()):  # newest first: stop at the entry's generation
                    if gen <= entry.generation:
                        break
                    since.append(item)
        return CacheHit(replace(entry, item_ids=list(entry.item_ids)), frozenset(since), recent)

    def generation(self, user_id: str) -> int:
        check_user(user_id)
        with self._lock:
            state = self._touch_user(user_id)
            return state.generation if state is not None else self._epoch

    def noted(self, user_id: str) -> frozenset[str]:
        check_user(user_id)
        with self._lock:
            state = self._users.get(user_id)
            return frozenset(state.noted) if state is not None else frozenset()

    def put(self, user_id: str, fingerprint: str, entry: CachedList) -> None:
        key = (check_user(user_id), fingerprint)
        now = self._clock()
        stored = replace(entry, item_ids=list(entry.item_ids), stored_at=entry.stored_at or now)
        with self._lock:
            state = self._touch_user(user_id)
            if not self._valid(entry.generation, state.generation if state is not None else self._epoch):
                return
            if state is None:  # an entry always has a state, so its validity never depends on _epoch
                self._new_user(user_id)
            self._entries[key] = (stored, now + self.ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def note_interactions(self, user_id: str, events: Sequence[tuple[str, str]]) -> int:
        check_user(user_id)
        n_new = 0
        with self._lock:
            state = self._touch_user(user_id) or self._new_user(user_id)
            for event_id, item_id in events:
                if not item_id:
                    continue
                if event_id:
                    if event_id in state.events:
                        continue
                    state.events[event_id] = None
                    if len(state.events) > self.max_events_per_user:
                        state.events.popitem(last=False)
                state.generation += 1
                state.noted[item_id] = state.generation
                state.noted.move_to_end(item_id)
                if len(state.noted) > self._keep_noted:
                    state.noted.popitem(last=False)
                n_new += 1
        return n_new

    def invalidate(self, user_id: str) -> None:
        check_user(user_id)
        with self._lock:
            state = self._touch_user(user_id) or self._new_user(user_id)
            # Every entry and in-flight computation has a generation <= the current one: jumping by
            # max_new makes them all invalid; the entries are deleted when next read (or by the LRU).
            state.generation += self.max_new

    def forget(self, user_id: str) -> int:
        check_user(user_id)
        with self._lock:
            keys = [key for key in self._entries if key[0] == user_id]  # O(entries): forgets are rare
            for key in keys:
                del self._entries[key]
            state = self._users.pop(user_id, None)
            # As for an evicted state: the floor rises past the user's generation, so no computation that
            # started before (it read a generation <= this one) can store its list.
            self._epoch = max(self._epoch, (state.generation if state is not None else self._epoch) + self.max_new)
        return len(keys)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._users.clear()

    # -- helpers (called with the lock held) ----------------------------------------------------

    def _valid(self, entry_generation: int, current: int) -> bool:
        return 0 <= current - entry_generation < self.max_new

    def _touch_user(self, user_id: str) -> _UserState | None:
        state = self._users.get(user_id)
        if state is not None:
            self._users.move_to_end(user_id)
        return state

    def _new_user(self, user_id: str) -> _UserState:
        state = self._users[user_id] = _UserState(self._epoch)
        while len(self._users) > self.max_users:
            _, evicted = self._users.popitem(last=False)
            self._epoch = max(self._epoch, evicted.generation + self.max_new)
        return state
