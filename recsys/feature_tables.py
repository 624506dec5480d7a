"""The bulk feature tables a trained model bundle ships; a feature store is (re)loaded from them.

On disk the tables are a directory of `.npy` files (numeric data, loaded with `allow_pickle=False`, so
a bundle can never execute code) and JSON files (strings). Histories are stored as CSR: an int64
`indptr` per user and int32 indices into the item vocabulary, so 1M items and 10M events stay a
few tens of MB and load without a Python-level parse of every event.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMAT = "recsys.feature_tables/1"
META_FILE = "meta.json"  # written last: its presence marks a complete directory


@dataclass
class FeatureTables:
    """Per-user and per-item features, row-aligned with `user_ids` / `item_ids` (ids are unique)."""

    user_ids: np.ndarray  # str array [U]
    user_feature_names: list[str]
    user_values: np.ndarray  # float32 [U, Fu]
    user_history: list[list[str]]  # item ids per user, oldest first
    user_attributes: list[dict[str, str]]
    item_ids: np.ndarray  # str array [I]
    item_feature_names: list[str]
    item_values: np.ndarray  # float32 [I, Fi]
    item_categories: list[list[str]]
    item_titles: list[str]
    created_at: float = 0.0  # unix time the tables were computed

    def __post_init__(self) -> None:
        # Coerce here so callers may pass lists, and every consumer can rely on dtypes and shapes.
        self.user_ids = _str_array(self.user_ids)
        self.item_ids = _str_array(self.item_ids)
        self.user_feature_names = [str(n) for n in self.user_feature_names]
        self.item_feature_names = [str(n) for n in self.item_feature_names]
        self.user_values = _matrix(self.user_values, len(self.user_ids), len(self.user_feature_names))
        self.item_values = _matrix(self.item_values, len(self.item_ids), len(self.item_feature_names))
        self.created_at = float(self.created_at)
        self.validate()

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistency: row counts, widths or duplicate ids."""
        n_u, n_i = len(self.user_ids), len(self.item_ids)
        checks = [
            ("user_values", self.user_values.shape, (n_u, len(self.user_feature_names))),
            ("item_values", self.item_values.shape, (n_i, len(self.item_feature_names))),
            ("user_history", len(self.user_history), n_u),
            ("user_attributes", len(self.user_attributes), n_u),
            ("item_categories", len(self.item_categories), n_i),
            ("item_titles", len(self.item_titles), n_i),
        ]
        for name, got, want in checks:
            if got != want:
                raise ValueError(f"FeatureTables.{name} has shape/length {got}, expected {want}")
        for name, ids in (("user_ids", self.user_ids), ("item_ids", self.item_ids)):
            index = pd.Index(ids)
            if not index.is_unique:
                dup = index[index.duplicated()][0]
                raise ValueError(f"FeatureTables.{name} contains duplicate id {dup!r}")
        for name, names in (("user_feature_names", self.user_feature_names),
                            ("item_feature_names", self.item_feature_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"FeatureTables.{name} contains duplicate names: {names}")

    def save(self, directory: Path) -> None:
        """Write the tables into `directory` (created if needed); meta.json goes last as a commit mark."""
        self.validate()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META_FILE).unlink(missing_ok=True)  # an interrupted overwrite must not look complete
        with gc_paused():
            self._save(directory)

    def _save(self, directory: Path) -> None:
        indptr, indices, extra_ids = _encode_histories(self.user_history, self.item_ids)
        np.save(directory / "user_values.npy", self.user_values, allow_pickle=False)
        np.save(directory / "item_values.npy", self.item_values, allow_pickle=False)
        np.save(directory / "user_history_indptr.npy", indptr, allow_pickle=False)
        np.save(directory / "user_history_indices.npy", indices, allow_pickle=False)
        _write_json(directory / "users.json", {
            "ids": self.user_ids.tolist(),
            "attributes": [{str(k): str(v) for k, v in a.items()} for a in self.user_attributes],
            # History items missing from item_ids get indices >= n_items into this list.
            "history_extra_item_ids": extra_ids,
        })
        _write_json(directory / "items.json", {
            "ids": self.item_ids.tolist(),
            # str() so numpy scalars/arrays from a DataFrame store fine and load back as plain strings
            "categories": [[str(c) for c in cats] for cats in self.item_categories],
            "titles": [str(t) for t in self.item_titles],
        })
        _write_json(directory / META_FILE, {
            "format": FORMAT,
            "created_at": self.created_at,
            "user_feature_names": self.user_feature_names,
            "item_feature_names": self.item_feature_names,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_history_events": int(indptr[-1]),
        })

    @classmethod
    def load(cls, directory: Path) -> FeatureTables:
        """Read tables written by `save`; ValueError if the directory is incomplete or another format."""
        directory = Path(directory)
        with gc_paused():
            return cls._load(directory)

    @classmethod
    def _load(cls, directory: Path) -> FeatureTables:
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ValueError(f"{directory}: no {META_FILE} (not feature tables, or save never finished)")
        meta = _read_json(meta_path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: unsupported format {meta.get('format')!r}, expected {FORMAT!r}")
        users = _read_json(directory / "users.json")
        items = _read_json(directory / "items.json")
        indptr = np.load(directory / "user_history_indptr.npy", allow_pickle=False)
        indices = np.load(directory / "user_history_indices.npy", allow_pickle=False)
        if len(indptr) != len(users["ids"]) + 1 or int(indptr[-1]) != len(indices):
            raise ValueError(f"{directory}: user history CSR arrays do not match users.json")
        vocab = items["ids"] + users["history_extra_item_ids"]
        return cls(
            user_ids=users["ids"],
            user_feature_names=meta["user_feature_names"],
            user_values=np.load(directory / "user_values.npy", allow_pickle=False),
            user_history=_decode_histories(indptr, indices, vocab),
            user_attributes=users["attributes"],
            item_ids=items["ids"],
            item_feature_names=meta["item_feature_names"],
            item_values=np.load(directory / "item_values.npy", allow_pickle=False),
            item_categories=items["categories"],
            item_titles=items["titles"],
            created_at=meta["created_at"],
        )


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small containers.

    Otherwise collections keep firing and rescanning everything built so far: saving or loading
    1M items / 10M events took 2-4x longer with it on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _str_array(ids: Any) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.str_)
    if arr.ndim != 1:
        raise ValueError(f"id arrays must be 1-D, got shape {arr.shape}")
    return arr


def _matrix(values: Any, rows: int, cols: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.size == 0 and arr.shape != (rows, cols) and rows * cols == 0:
        arr = arr.reshape(rows, cols)  # [] for "no rows" or "no features"
    if arr.ndim != 2:
        raise ValueError(f"feature values must be 2-D [rows, features], got shape {arr.shape}")
    return arr


def _encode_histories(histories: list[list[str]],
                      item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Histories as (indptr, int32 indices, extra ids); pandas' vectorised hash lookup, not a dict loop."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = np.fromiter(chain.from_iterable(histories), dtype=object, count=int(indptr[-1]))
    indices = pd.Index(item_ids, dtype=object).get_indexer(flat) if len(flat) else np.zeros(0, np.int64)
    extra_ids: list[str] = []
    missing = indices < 0
    if missing.any():
        extra, inverse = np.unique(flat[missing].astype(np.str_), return_inverse=True)
        extra_ids = extra.tolist()
        indices[missing] = len(item_ids) + inverse.ravel()
    if len(item_ids) + len(extra_ids) > np.iinfo(np.int32).max:
        raise ValueError("too many distinct history items for int32 indices")
    return indptr, indices.astype(np.int32), extra_ids


def _decode_histories(indptr: np.ndarray, indices: np.ndarray, vocab: list[str]) -> list[list[str]]:
    # One object-array gather, then list slices: the same str objects are shared by every history.
    flat = np.asarray(vocab, dtype=object)[indices].tolist() if len(indices) else []
    bounds = indptr.tolist()
    return [flat[bounds[u]:bounds[u + 1]] for u in range(len(bounds) - 1)]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
