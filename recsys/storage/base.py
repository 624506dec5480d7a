"""The storage contract behind feature_svc: record types and the abstract `FeatureStorage`.

Every backend must pass tests/storage/test_storage_contract.py, so the server can swap the
in-process store for Redis (shared by several replicas) without changing a line.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.feature_tables import FeatureTables

# Feature names that record_events increments by 1 per applied event, when the tables define them.
USER_INTERACTIONS_FEATURE = "user_n_interactions"
ITEM_INTERACTIONS_FEATURE = "item_n_interactions"
# Longest history an event can grow (oldest items dropped, counters kept): one user sending endless
# events must not grow a record, or the work of every read of it, without bound.
HISTORY_CAP = 1000
# How long an applied event id is remembered, so a redelivered event changes nothing.
APPLIED_TTL_S = 7 * 86_400


@dataclass(frozen=True)
class OnlineColumns:
    """Where an applied event lands in one side's (user or item) feature vector; None = not in the tables.

    Per event: `n_interactions` and the per-type counter `n_<type>` (e.g. `user_n_click`) +1; the
    distinct-count (`user_n_items` / `item_n_users`) +1 when the item was not in the user's history; the
    last timestamp raised to the event's; the first timestamp set when still 0 (a new user or item).
    Means and relative popularity are left to the next training.
    """

    names: tuple[str, ...]
    prefix: str  # "user_" or "item_"

    def column(self, name: str) -> int | None:
        full = self.prefix + name
        return self.names.index(full) if full in self.names else None

    def plus(self, event_type: str) -> tuple[int, ...]:
        cols = (self.column("n_interactions"), self.column(f"n_{event_type}"))
        return tuple(c for c in cols if c is not None)

    @property
    def if_new(self) -> int | None:
        return self.column("n_items" if self.prefix == "user_" else "n_users")

    @property
    def last_ts(self) -> int | None:
        return self.column("last_ts")

    @property
    def first_ts(self) -> int | None:
        return self.column("first_ts")


class StorageError(RuntimeError):
    """Base class of feature storage failures."""


class ReadRaced(StorageError):
    """A bulk reload replaced the data during a read: reading again gives a consistent answer."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached (refused, timed out, loading); the server maps it to UNAVAILABLE."""


@dataclass(slots=True)
class UserRecord:
    user_id: str
    values: np.ndarray  # float32, aligned with FeatureStorage.user_feature_names
    history: list[str]  # item ids, oldest first
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ItemRecord:
    item_id: str
    values: np.ndarray  # float32, aligned with FeatureStorage.item_feature_names
    categories: list[str] = field(default_factory=list)
    title: str = ""


@dataclass(slots=True)
class ItemColumns:
    """A batch of item records as columns, in request order: what feature_svc answers with, built without
    a Python object per item where the backend can (the embedded store gathers each column at once)."""

    found: np.ndarray                  # bool [n]
    values: np.ndarray                 # float32 [n, len(item_feature_names)]; NaN rows where not found
    titles: list[str]                  # "" where not found
    categories: list[Sequence[str]]    # () where not found

    @classmethod
    def of_records(cls, records: Sequence[ItemRecord | None], n_features: int) -> ItemColumns:
        values = np.full((len(records), n_features), np.nan, dtype=np.float32)
        for i, rec in enumerate(records):
            if rec is not None:
                values[i] = rec.values
        return cls(found=np.array([r is not None for r in records], dtype=bool), values=values,
                   titles=[r.title if r is not None else "" for r in records],
                   categories=[r.categories if r is not None else () for r in records])


@dataclass(slots=True)
class Event:
    user_id: str
    item_id: str
    event: str = "view"
    value: float = 1.0
    timestamp: int = 0  # unix seconds, as sent by the client; not used for ordering
    event_id: str = ""  # idempotency key: an id already applied is skipped ("" = no check)


@dataclass(frozen=True, slots=True)
class Erased:
    """What forget_users removed: user records (features and attributes) and the history items they held."""

    records: int = 0
    history_items: int = 0

    def __add__(self, other: Erased) -> Erased:
        return Erased(self.records + other.records, self.history_items + other.history_items)


class FeatureStorage(abc.ABC):
    """An online feature store: bulk-loaded from FeatureTables, read in batches, updated by events.

    Records returned by reads are copies: callers may mutate them without affecting the store.
    """

    # True when calls answer in microseconds without I/O, so a server may call them on its event loop;
    # a network backend is called from a worker thread instead.
    in_process: bool = False
    # Appending beyond this many items drops the oldest (bulk loads are kept as trained).
    history_cap: int = HISTORY_CAP

    @property
    @abc.abstractmethod
    def user_feature_names(self) -> list[str]:
        """Names aligned with UserRecord.values ([] before the first load)."""

    @property
    @abc.abstractmethod
    def item_feature_names(self) -> list[str]:
        """Names aligned with ItemRecord.values ([] before the first load)."""

    @abc.abstractmethod
    def load(self, tables: FeatureTables) -> None:
        """Replace everything with `tables`; readers see either the old or the new data, never a mix.

        Events recorded while a load runs are applied to the old data and therefore lost.
        """

    @abc.abstractmethod
    def get_users(self, user_ids: Sequence[str], history_limit: int = 0) -> list[UserRecord | None]:
        """Records in request order, None for unknown ids.

        history_limit > 0 keeps only the most recent `history_limit` items (still oldest first); 0 keeps all.
        """

    @abc.abstractmethod
    def get_items(self, item_ids: Sequence[str]) -> list[ItemRecord | None]:
        """Records in request order, None for unknown ids; one backend round trip for the whole batch."""

    def get_item_columns(self, item_ids: Sequence[str]) -> ItemColumns:
        """get_items as columns; backends override it to skip the per-item records."""
        names = self.item_feature_names
        records = self.get_items(item_ids)
        if any(r is not None and len(r.values) != len(names) for r in records):
            raise ReadRaced("the item features were reloaded during the read; retry")
        return ItemColumns.of_records(records, len(names))

    @abc.abstractmethod
    def record_events(self, events: Sequence[Event]) -> int:
        """Apply interaction events in order and return how many were applied.

        Per event: the item moves to (or is appended at) the end of the user's history, unknown users
        are created with zero features, and the online features of OnlineColumns (counters, per-type
        counters, distinct counts, first and last timestamps) are updated when the tables have them.
        Unknown items still enter the history (the catalogue
        may catch up later) but get no item record. Events with an empty user or item id are skipped,
        and so are events whose non-empty `event_id` was applied before (since the last load, within
        APPLIED_TTL_S): applying a batch twice changes nothing. A history longer than `history_cap`
        loses its oldest items.
        """

    @abc.abstractmethod
    def upsert_items(self, items: Sequence[ItemRecord]) -> int:
        """Create items (with the given values) or, for known ones, replace title and categories and keep
        their values (counters); returns how many were written. Idempotent."""

    @abc.abstractmethod
    def upsert_users(self, users: Sequence[tuple[str, dict[str, str]]]) -> int:
        """Create users (zero features, empty history) or merge the given attributes into known ones;
        returns how many were written. Idempotent."""

    @abc.abstractmethod
    def forget_users(self, user_ids: Sequence[str]) -> Erased:
        """Erase the users' records: features, history and attributes (Users/Forget); unknown ids are
        skipped, so repeating it changes nothing. Afterwards get_users answers None for them, and an
        event or upsert that comes later starts a new user from zero features, as for any new user.
        """

    @abc.abstractmethod
    def last_update(self) -> float:
        """Unix time of the last load or applied event (0.0 if never); feeds the freshness metric."""

    def loaded_bundle(self) -> str | None:
        """The bundle version whose tables were last bulk-loaded (None if unknown)."""
        return getattr(self, "_loaded_bundle", None)

    def mark_loaded_bundle(self, version: str) -> None:
        """Record which bundle the store holds, so other replicas sharing it skip reloading it."""
        self._loaded_bundle = version

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the backend answers now; never raises (for health checks)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the storage must not be used afterwards."""

    def __enter__(self) -> FeatureStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_history_limit(history_limit: int) -> int:
    """Reject negative values early: they would silently mean 'drop the oldest' in slicing code."""
    history_limit = int(history_limit)
    if history_limit < 0:
        raise ValueError(f"history_limit must be >= 0 (0 = whole history), got {history_limit}")
    return history_limit
