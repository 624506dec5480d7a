"""The in-memory form of a dataset that every importer produces and every trainer consumes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Implicit-feedback strength of each event type. A rating's strength comes from its value instead.
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "like": 4.0,
    "share": 4.0,
    "rating": 1.0,
}

# Events whose strength comes from their value rather than EVENT_WEIGHTS: a rating as given; a play count
# (implicit, heavy-tailed: 1 to 350k plays in Last.fm) through log1p so one fan's loop does not dwarf
# everyone else. Import-only types: the Feedback API accepts only EVENT_WEIGHTS' types.
VALUE_EVENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rating": lambda v: v,
    "play": np.log1p,
}

INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "event", "value"]
SOCIAL_COLUMNS = ["user_id", "friend_id"]


class DatasetError(ValueError):
    """A dataset file is malformed. The message names the file, and the line and column when known."""

    def __init__(self, path: str, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f" (column {column!r})"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.column = column


@dataclass
class Dataset:
    """Interactions plus optional item and user metadata, all ids as strings.

    interactions: columns user_id (str), item_id (str), timestamp (int64 unix seconds),
        event (str), value (float64; the rating for event == "rating", else 1.0 unless given).
    items: item_id (str), title (str), categories (list[str]), plus numeric feature columns.
    users: user_id (str) plus attribute columns (str).
    social: optional directed links user_id -> friend_id (both str), e.g. Last.fm's friend graph: side data
        kept for models that use it (none does yet); a symmetric graph lists both directions.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    name: str = "dataset"
    notes: list[str] = field(default_factory=list)  # what cleaning did, for the bundle metadata
    social: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.social is not None and list(self.social.columns) != SOCIAL_COLUMNS:
            raise ValueError(f"dataset {self.name!r}: social needs columns {SOCIAL_COLUMNS}, "
                             f"got {list(map(str, self.social.columns))}")

    def fingerprint(self) -> str:
        """A stable hash of the interactions (and metadata ids), recorded in model bundles."""
        h = hashlib.sha256()
        cols = self.interactions[["user_id", "item_id", "timestamp"]]
        h.update(pd.util.hash_pandas_object(cols, index=False).values.tobytes())
        if self.items is not None:
            h.update(pd.util.hash_pandas_object(self.items["item_id"], index=False).values.tobytes())
        if self.users is not None:
            h.update(pd.util.hash_pandas_object(self.users["user_id"], index=False).values.tobytes())
        return h.hexdigest()[:16]

    def weights(self) -> np.ndarray:
        """Implicit confidence per interaction: the event strength, or f(value) for VALUE_EVENTS (a rating
        as given, log1p of a play count). Unknown event types weigh 1."""
        event = self.interactions["event"]
        out = np.array(event.map(EVENT_WEIGHTS).fillna(1.0), dtype=np.float64)  # a writable copy
        val = self.interactions["value"].to_numpy(dtype=np.float64)
        for name, f in VALUE_EVENTS.items():
            mask = (event == name).to_numpy()
            if mask.any():
                out[mask] = f(val[mask])
        return out
