"""Item-to-item: EASE (or shrunk cosine on large catalogs) weights summed over the recent history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.item2item import item_neighbors
from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import (
    CandidateSource,
    Catalog,
    Proposal,
    SourceRequest,
    TrainingData,
    accumulate,
    lookup,
    rank_in,
    top_positive,
    unknown_if_added,
)


class NeighborSource(CandidateSource):
    """A source whose table holds weighted neighbours per item; a user's score is the sum over the history."""

    table: sp.csr_matrix

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        """New items have no neighbours yet: empty rows and columns (the table stays square)."""
        t = self.table
        indptr = np.concatenate([t.indptr, np.full(n, t.indptr[-1], dtype=t.indptr.dtype)])
        self.table = sp.csr_matrix((t.data, t.indices, indptr), shape=(first + n, first + n))

    def propose(self, req: SourceRequest) -> Proposal:
        score, rank = self.columns
        if req.cold_user:
            empty = np.zeros(0, np.int64)
            return Proposal(None, lambda items: {score: unknown_if_added(lookup(empty, empty, items), items,
                                                                         self.catalog),
                                                 rank: rank_in(None, items)})
        reached, weights = accumulate(self.table, req.recent, self.catalog.n_items)
        ranked = reached[top_positive(weights, req.depth)]
        return Proposal(ranked, lambda items: {score: unknown_if_added(lookup(reached, weights, items), items,
                                                                       self.catalog),
                                               rank: rank_in(ranked, items)})


@register_source
class ItemToItemSource(NeighborSource):
    name = "i2i"
    columns = ("i2i_score", "i2i_rank")
    relative = ("i2i_score",)
    primary = "i2i_score"
    quota = 0.4

    def __init__(self, catalog: Catalog, table: sp.csr_matrix, method: str):
        self.catalog, self.table, self.method = catalog, table, method

    @classmethod
    def build(cls, data: TrainingData) -> ItemToItemSource:
        table, method = item_neighbors(data.x, ease_reg=data.cfg.ease_reg, m=data.cfg.neighbors)
        return cls(data.catalog, table, method)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> ItemToItemSource:
        return cls(catalog, sp.load_npz(directory / "neighbors.npz").tocsr(), meta["neighbor_method"])

    def save(self, directory: Path) -> dict[str, Any]:
        sp.save_npz(directory / "neighbors.npz", self.table)
        return {"neighbor_method": self.method}
