"""Sequence neighbours: items consumed right before or after the user's recent items."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from recsys.data.split import has_time_order
from recsys.retrieval.sequence import sequence_neighbors
from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import Catalog, TrainingData
from recsys.retrieval.sources.i2i import NeighborSource

log = logging.getLogger(__name__)


@register_source
class SequenceSource(NeighborSource):
    name = "seq"
    columns = ("seq_score", "seq_rank")
    relative = ("seq_score",)
    primary = "seq_score"
    quota = 0.1

    def __init__(self, catalog: Catalog, table: sp.csr_matrix):
        self.catalog, self.table = catalog, table

    @classmethod
    def build(cls, data: TrainingData) -> SequenceSource | None:
        """Learns only from users whose interactions differ in time: without time, adjacency would be the
        importer's row order (Last.fm lists each user's artists by play count). None when no user has time."""
        cfg = data.cfg
        if cfg.sequence_neighbors <= 0:
            return None
        timed = has_time_order(data.user_codes, data.timestamps)
        if not timed.any():
            log.info("sequence source skipped: the interactions carry no time order")
            return None
        return cls(data.catalog, sequence_neighbors(data.user_codes[timed], data.item_codes[timed],
                                                    data.timestamps[timed], data.catalog.n_items,
                                                    window=cfg.sequence_window, m=cfg.sequence_neighbors))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> SequenceSource | None:
        path = directory / "sequence.npz"
        return cls(catalog, sp.load_npz(path).tocsr()) if path.is_file() else None

    def save(self, directory: Path) -> dict[str, Any]:
        sp.save_npz(directory / "sequence.npz", self.table)
        return {}
