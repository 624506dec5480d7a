"""The interface every candidate source implements, and the shared tables it works over.

A source is one small module: its name, the score columns it contributes (and which of them the ranker
should see relative to the request), its share of the candidate budget, how it is built from training
data and saved in a bundle, and how it proposes and scores candidates for one request. The generator
only merges what the configured sources return.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from recsys.feature_tables import FeatureTables
    from recsys.training.config import TrainConfig


@dataclass
class Catalog:
    """What every source and the ranker share: the items, their ALS embeddings and their categories."""

    item_ids: np.ndarray            # str [I]; row i of every table is item_ids[i]
    item_factors: np.ndarray        # float32 [I, f] ALS item embeddings (retrieval, ranker features, MMR)
    item_categories: sp.csr_matrix  # float32 [I, C] one-hot categories
    category_names: list[str]
    source_dir: Path | None = None  # where the bundle's retrieval part was loaded from
    added: int = 0                  # the last `added` rows were added at run time (CandidateGenerator.add_items)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_trained(self) -> int:
        """Rows that came with the bundle; their factors are learned and never replaced."""
        return len(self.item_ids) - self.added


@dataclass
class TrainingData:
    """What a source is built from: the interactions of one training run, encoded against the catalog."""

    x: sp.csr_matrix                # binary users x items
    user_codes: np.ndarray          # per interaction, in input order
    item_codes: np.ndarray
    timestamps: np.ndarray
    tables: FeatureTables           # user attributes, histories, item metadata
    catalog: Catalog
    cfg: TrainConfig

    @property
    def item_counts(self) -> np.ndarray:
        """Distinct users per item."""
        return np.asarray(self.x.sum(axis=0)).ravel()


@dataclass
class SourceRequest:
    """One user's retrieval request, as every source sees it."""

    history: np.ndarray             # item indices, oldest first
    recent: np.ndarray              # the most recent part, which drives history-based sources
    attributes: dict[str, str]
    depth: int                      # how many items a source should propose (survives seen-item filtering)
    user_id: str = ""               # who asks ("": unknown); for models with per-user parameters (ncf)

    @property
    def cold_user(self) -> bool:
        return len(self.history) == 0


@dataclass
class Proposal:
    """A source's answer: items best first (None = nothing to propose), and its score columns for any
    merged candidate, whichever source proposed it (the ranker sees every source's view of every item)."""

    ranked: np.ndarray | None
    score: Callable[[np.ndarray], dict[str, np.ndarray]]


class CandidateSource(abc.ABC):
    name: ClassVar[str]                         # also its bit name in RetrieveResponse.source_names
    columns: ClassVar[tuple[str, ...]]          # score columns it contributes, in order
    relative: ClassVar[tuple[str, ...]] = ()    # columns whose scale drifts with data: used per request
    primary: ClassVar[str]                      # the column that orders its own list (evaluation's fusion)
    quota: ClassVar[float] = 0.0                # default share of the budget for a user with history
    cold_quota: ClassVar[float] = 0.0           # ... and for a user without

    catalog: Catalog
    # Items this source has tables for, when it did not grow with the catalog (see add_items); None = all.
    n_known: int | None = None

    @classmethod
    @abc.abstractmethod
    def build(cls, data: TrainingData) -> CandidateSource | None:
        """Fit on training data (None when the data cannot support this source, e.g. no timestamps)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> CandidateSource | None:
        """Read what `save` wrote (None when the bundle has no such table)."""

    @abc.abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Write its tables into the bundle's retrieval directory; returns entries for retrieval.json."""

    def start(self, index: str) -> None:  # noqa: B027 - optional hook
        """Build runtime structures (an ANN index, lookups) before serving; `index` is the ANN kind."""

    @abc.abstractmethod
    def propose(self, req: SourceRequest) -> Proposal:
        """Candidates and their scores for one request."""

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        """The catalog grew: rows first..first+n-1 are new items and `changed` lists older rows whose
        categories (or, for items added at run time, vectors) changed. Called by CandidateGenerator.add_items
        on a private shallow copy of a started source whose `catalog` already is the grown one, while requests
        keep reading the previous copy: rebind attributes to new arrays, never write into existing ones.

        This default suits a source without per-item growth: it keeps the tables it was built with, and the
        generator hides newer items from it (they are neither proposed nor in its requests' histories, and its
        score columns are NaN for them: missing, for the ranker)."""
        if self.n_known is None:
            self.n_known = first


@dataclass
class SourceSet:
    """The configured sources of a bundle, in merge order (bit i of a source mask = sources[i])."""

    sources: list[CandidateSource] = field(default_factory=list)

    def names(self) -> list[str]:
        return [s.name for s in self.sources]


# -- helpers shared by the sources -----------------------------------------------------------------
def top_positive(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest positive scores, best first (partial sort: catalogs can be large)."""
    idx = np.argpartition(-scores, n)[:n] if n < len(scores) else np.arange(len(scores))
    idx = idx[scores[idx] > 0]
    return idx[np.argsort(-scores[idx], kind="stable")]


def lookup(keys: np.ndarray, values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """values[k] for each item found in the sorted `keys`, 0 elsewhere."""
    out = np.zeros(len(items), dtype=np.float32)
    if len(keys) and len(items):
        pos = np.searchsorted(keys, items).clip(0, len(keys) - 1)
        hit = keys[pos] == items
        out[hit] = values[pos[hit]]
    return out


def rank_in(ranked: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    """1-based rank of each item in a source's ranked list, NaN where the source did not return it."""
    out = np.full(len(items), np.nan, dtype=np.float32)
    if ranked is None or not len(ranked) or not len(items):
        return out
    order = np.argsort(ranked, kind="stable")
    pos = np.searchsorted(ranked[order], items).clip(0, len(ranked) - 1)
    hit = ranked[order][pos] == items
    out[hit] = order[pos[hit]] + 1
    return out


SPARSE_ACCUMULATE_RATIO = 16  # catalog items per neighbour entry above which accumulate sorts the entries


def accumulate(table: sp.csr_matrix, recent: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(items reached, ascending; summed weights) over the history's rows of a neighbour table.

    Small catalogs: a dense bincount over the catalog, linear in the rows' entries and cheaper than sorting
    them. Large catalogs (more than SPARSE_ACCUMULATE_RATIO items per entry): the entries are sorted instead,
    so a request costs what its history reaches, not what the catalog holds. Both sum each item's weights
    in entry order in float64, so they give the same result."""
    indices, data = row_entries(table, recent)
    if len(indices) * SPARSE_ACCUMULATE_RATIO < n_items:
        reached, inverse = np.unique(indices, return_inverse=True)
        acc = np.bincount(inverse, weights=data, minlength=len(reached))
        keep = acc != 0
        return reached[keep].astype(np.int64), acc[keep].astype(np.float32)
    acc = np.bincount(indices, weights=data, minlength=n_items)
    items = np.flatnonzero(acc)
    return items, acc[items].astype(np.float32)


def row_entries(table: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of the given rows' entries, row after row: what `table[rows]` holds, without
    scipy's per-call checks and matrix construction (half the cost for a request's history)."""
    offsets, _ = _entry_offsets(table, rows)
    return table.indices[offsets], table.data[offsets]


def _entry_offsets(table: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in table.indices/data of the rows' entries, row after row; the number per row)."""
    rows = np.asarray(rows, dtype=np.intp)
    starts = table.indptr[rows]
    lengths = table.indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.intp), lengths
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total), lengths


def rows_sum(table: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """`table[rows].sum(axis=0)` as a flat array of the table's dtype, summed in the same order (row after
    row, in the table's dtype, as scipy's product with a row of ones does) without building the submatrix."""
    indices, data = row_entries(table, rows)
    out = np.zeros(table.shape[1], dtype=table.dtype)
    np.add.at(out, indices, data)
    return out


def rows_dot(table: sp.csr_matrix, rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """`table[rows] @ vector` for a vector of the table's dtype: each row's products summed in entry order
    from zero, as scipy's csr_matvec does, without building the submatrix."""
    offsets, lengths = _entry_offsets(table, rows)
    out = np.zeros(len(lengths), dtype=np.result_type(table.dtype, vector.dtype))
    np.add.at(out, np.repeat(np.arange(len(lengths)), lengths), table.data[offsets] * vector[table.indices[offsets]])
    return out


def unknown_if_added(col: np.ndarray, items: np.ndarray, catalog: Catalog) -> np.ndarray:
    """`col` with NaN for items added after training. A table learned from interactions knows nothing about
    them, and missing (NaN: 0 in the ranker's linear base, z-scores over the other candidates) keeps the
    ranker from reading "no co-occurrence yet" as evidence against a brand-new item."""
    if not catalog.added or not len(items):
        return col
    out = np.array(col, dtype=np.float32)
    out[items >= catalog.n_trained] = np.nan
    return out


def nan_column(items: np.ndarray) -> np.ndarray:
    return np.full(len(items), np.nan, dtype=np.float32)
