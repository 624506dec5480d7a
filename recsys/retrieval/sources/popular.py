"""Global popularity: log-scaled counts of distinct users, the same list for everyone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData


@register_source
class PopularSource(CandidateSource):
    name = "popular"
    columns = ("pop_score",)
    primary = "pop_score"
    quota = 0.05
    cold_quota = 0.5

    def __init__(self, catalog: Catalog, popularity: np.ndarray):
        self.catalog = catalog
        self.popularity = popularity  # float32 [I] in [0, 1]

    @classmethod
    def build(cls, data: TrainingData) -> PopularSource:
        counts = data.item_counts
        return cls(data.catalog, (np.log1p(counts) / max(np.log1p(counts.max()), 1e-9)).astype(np.float32))

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> PopularSource:
        return cls(catalog, np.load(directory / "popularity.npy"))

    def save(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "popularity.npy", self.popularity)
        return {}

    def start(self, index: str) -> None:
        self.order = np.argsort(-self.popularity, kind="stable")

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        """New items have no users yet: popularity 0, last in the order (where a stable sort puts them)."""
        self.popularity = np.concatenate([self.popularity, np.zeros(n, np.float32)])
        self.order = np.concatenate([self.order, np.arange(first, first + n)])

    def propose(self, req: SourceRequest) -> Proposal:
        return Proposal(self.order[: req.depth], lambda items: {"pop_score": self.popularity[items]})
