"""Content: cold items (too few interactions for the collaborative sources) matched to the categories of
the user's recent history, so new items get shown before they have a track record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData, top_positive


@register_source
class ContentSource(CandidateSource):
    name = "content"
    columns = ("content_score",)
    relative = ("content_score",)
    primary = "content_score"
    quota = 0.05

    def __init__(self, catalog: Catalog, cold: np.ndarray):
        self.catalog = catalog
        self.cold = cold              # bool [I]

    @classmethod
    def build(cls, data: TrainingData) -> ContentSource:
        return cls(data.catalog, data.item_counts < data.cfg.cold_threshold)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> ContentSource:
        return cls(catalog, np.load(directory / "cold.npy"))

    def save(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "cold.npy", self.cold)
        return {}

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        """New items are cold, so this source proposes them to users whose recent categories match theirs;
        the cold items' category rows are re-read because an upsert may have changed some of them."""
        self.cold = np.concatenate([self.cold, np.ones(n, bool)])
        self.start("")

    def start(self, index: str) -> None:
        self.cold_items = np.flatnonzero(self.cold)
        self.cold_categories = self.catalog.item_categories[self.cold_items].tocsr()

    def propose(self, req: SourceRequest) -> Proposal:
        cats = self.catalog.item_categories
        profile = np.zeros(cats.shape[1], dtype=np.float32)
        ranked = None
        if not req.cold_user:
            profile = np.asarray(cats[req.recent].sum(axis=0), dtype=np.float32).ravel()
            profile /= max(1.0, float(len(req.recent)))
            if len(self.cold_items):
                ranked = self.cold_items[top_positive(self.cold_categories @ profile, req.depth)]
        return Proposal(ranked, lambda items: {"content_score": cats[items] @ profile})
