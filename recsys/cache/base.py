"""The per-user recommendation-list cache contract: records, the abstract `ListCache`, `fingerprint`.

ranker_svc keeps the expensive, request-independent part of a Recommend answer (prepare) per user and
fingerprint. A list stays valid until its TTL passes or the user has made `max_new` new interactions
since it was computed; interactions made since are reported with every hit so the caller can filter
them out. The per-user generation scheme that makes this race-free is described in docs/cache.md.
Every backend must pass tests/cache/test_cache_contract.py.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_TTL_S = 900.0
DEFAULT_MAX_NEW = 10
# How many of a user's most recent noted items are kept: only those noted at most max_new - 1
# generations after a valid entry matter, the slack absorbs re-noted items.
NOTED_ITEMS_FACTOR = 4

MissReason = Literal["miss", "expired", "invalidated"]


class CacheUnavailable(RuntimeError):
    """The cache backend failed (unreachable, timed out, bad reply): the caller computes without it."""


@dataclass(frozen=True, slots=True)
class CachedList:
    item_ids: list[str]
    payload: bytes  # opaque to the cache (the ranker stores a serialized response)
    generation: int  # the user's generation read before computing
    stored_at: float = 0.0  # unix time, set by put when 0


@dataclass(frozen=True, slots=True)
class CacheHit:
    entry: CachedList
    interacted_since: frozenset[str]  # items noted at generations > entry.generation
    # Every noted item the cache still keeps, also those before the entry's generation: the history the
    # entry was computed from may have lagged behind them (the features consumer is asynchronous).
    recent: frozenset[str] = frozenset()


class ListCache(abc.ABC):
    """Lists keyed by (user, fingerprint), invalidated by TTL or by the user's new interactions.

    Protocol for a caller: `g = generation(user)` BEFORE reading the user's history, compute,
    `put(user, fp, CachedList(items, payload, g))`; on `get`, drop `interacted_since` from the items
    and recompute when too few remain. Interactions noted while computing are then still reported.
    """

    ttl_s: float
    max_new: int
    # True when calls never block on I/O, so a server may call them on its event loop.
    in_process: bool = False

    @abc.abstractmethod
    def get(self, user_id: str, fingerprint: str) -> CacheHit | MissReason:
        """A hit, or why not: "miss", "expired" or "invalidated" (the last two delete the entry)."""

    @abc.abstractmethod
    def generation(self, user_id: str) -> int:
        """The user's interaction generation now; read it before computing a list to put."""

    @abc.abstractmethod
    def noted(self, user_id: str) -> frozenset[str]:
        """Every noted item still kept for the user (the most recent ones): filtered from a freshly computed
        list too, whose history may lag behind them (the features consumer is asynchronous)."""

    @abc.abstractmethod
    def put(self, user_id: str, fingerprint: str, entry: CachedList) -> None:
        """Store `entry` for ttl_s, unless its generation is no longer valid (then silently not stored)."""

    @abc.abstractmethod
    def note_interactions(self, user_id: str, events: Sequence[tuple[str, str]]) -> int:
        """Note (event_id, item_id) pairs in order; returns how many were new.

        Idempotent per event id (within the most recent ones kept per user): a repeated event changes
        nothing. An empty event id cannot be deduplicated and always counts; an empty item id is skipped.
        """

    @abc.abstractmethod
    def invalidate(self, user_id: str) -> None:
        """Drop every list of the user, including any being computed now (their put will not store)."""

    @abc.abstractmethod
    def forget(self, user_id: str) -> int:
        """Erase everything kept for the user (Users/Forget): every list, the noted items and event ids, the
        generation; a list being computed now is not stored either. Returns how many lists were erased."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers now; never raises (for health checks)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; the cache must not be used afterwards."""

    def __enter__(self) -> ListCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_settings(ttl_s: float, max_new: int) -> tuple[float, int]:
    """Reject settings that would make every entry dead on arrival (or never invalidated)."""
    ttl_s, max_new = float(ttl_s), int(max_new)
    if not ttl_s > 0:
        raise ValueError(f"cache ttl_s must be > 0, got {ttl_s}")
    if max_new < 1:
        raise ValueError(f"cache max_new must be >= 1, got {max_new}")
    return ttl_s, max_new


def check_user(user_id: str) -> str:
    """An empty user id would share one key (and, in Redis Cluster, break the per-user hash tag)."""
    if not user_id:
        raise ValueError("user_id must be non-empty")
    return user_id


def fingerprint(*parts: object) -> str:
    """A short stable hash of `parts` (compared by str(); bytes as is): the model version, every
    setting that changes the answer, the experiment arm. Stable across processes, unlike hash()."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(raw).to_bytes(8, "little"))  # length-prefixed: ("ab", "c") != ("a", "bc")
        h.update(raw)
    return h.hexdigest()
