"""Positions of string ids for batches of hundreds of ids against catalogs of up to millions.

A request looks up its few hundred candidates in a million-entry table that the rest of the request's work
has pushed out of the CPU caches. A dict lookup per id then costs one cache miss after another in the
interpreter, and a binary search over sorted hashes about ten dependent misses per id. Here the ids' 64-bit
hashes sit in an open-addressing table (linear probing, at most half full): each round of probing is one
numpy gather for the whole batch, so the misses of all ids overlap, and each hash match is confirmed against
the stored id, so an unknown id never aliases a known one (nor do two ids whose hashes clash). 500 ids
against 1M, caches cold: 315 us, against 720 us with a dict and 620 us with a binary search. The table
costs 12 bytes a slot (2.5-5 slots an id) plus a pointer per id: 58 MB at 1M ids (66 with explicit rows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Indirection so a test can force hash collisions.
_hash = hash
_EMPTY = -1


class IdIndex:
    """Maps ids[i] to rows[i] (default: i). The table holds positions in `ids`; a match is confirmed against
    the id there."""

    def __init__(self, ids: Sequence[str], rows: Sequence[int] | np.ndarray | None = None):
        self._ids = np.fromiter(ids, dtype=object, count=len(ids))
        self._row_of = None if rows is None else np.asarray(rows, dtype=np.int64)  # None: the position
        self._alloc(len(self._ids))
        self._insert(np.fromiter(map(_hash, self._ids), dtype=np.int64, count=len(self._ids)),
                     np.arange(len(self._ids), dtype=np.int32))

    def __len__(self) -> int:
        return len(self._ids)

    def _alloc(self, n: int) -> None:
        size = 16
        while size < 2.5 * n:  # room for a quarter more ids before `add` rebuilds (0.4 s at 1M ids)
            size *= 2
        self._mask = size - 1
        self._hashes = np.zeros(size, dtype=np.int64)
        self._slot_pos = np.full(size, _EMPTY, dtype=np.int32)

    def _insert(self, hashes: np.ndarray, positions: np.ndarray) -> None:
        """Place entries of ids not in the table yet, a probing round at a time: among the entries aiming
        at one free slot the first takes it, the others move on."""
        pending = np.arange(len(hashes))
        slot = hashes & self._mask
        while len(pending):
            at = slot[pending]
            free = self._slot_pos[at] == _EMPTY
            claim, claim_at = pending[free], at[free]
            _, first = np.unique(claim_at, return_index=True)
            won = claim[first]
            self._hashes[slot[won]] = hashes[won]
            self._slot_pos[slot[won]] = positions[won]
            placed = np.zeros(len(hashes), dtype=bool)
            placed[won] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & self._mask

    def add(self, item_id: str, row: int | None = None) -> None:
        """Index a new id (one not indexed yet) at `row` (default: its position); the table doubles when it
        would be over half full."""
        pos = len(self._ids)
        self._ids = np.append(self._ids, np.array([item_id], dtype=object))
        if self._row_of is not None or row not in (None, pos):
            rows = np.arange(pos, dtype=np.int64) if self._row_of is None else self._row_of
            self._row_of = np.append(rows, np.int64(pos if row is None else row))
        if 2 * len(self._ids) > len(self._slot_pos):
            self._alloc(len(self._ids))
            self._insert(np.fromiter(map(_hash, self._ids), dtype=np.int64, count=len(self._ids)),
                         np.arange(len(self._ids), dtype=np.int32))
        else:
            self._insert(np.array([_hash(item_id)], dtype=np.int64), np.array([pos], dtype=np.int32))

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The row of each id, -1 where it is unknown."""
        n = len(ids)
        out = np.full(n, _EMPTY, dtype=np.int64)
        if not n or not len(self._ids):
            return out
        want = np.fromiter(ids, dtype=object, count=n)
        hashes = np.fromiter(map(_hash, ids), dtype=np.int64, count=n)
        slot = hashes & self._mask
        todo = np.arange(n)
        while len(todo):
            at = slot[todo]
            pos = self._slot_pos[at]
            match = (pos != _EMPTY) & (self._hashes[at] == hashes[todo])
            same = np.zeros(len(todo), dtype=bool)
            same[match] = self._ids[pos[match]] == want[todo[match]]
            out[todo[same]] = pos[same]
            todo = todo[~same & (pos != _EMPTY)]  # an empty slot ends the probe: the id is unknown
            slot[todo] = (slot[todo] + 1) & self._mask
        if self._row_of is not None:
            found = out >= 0
            out[found] = self._row_of[out[found]]
        return out
