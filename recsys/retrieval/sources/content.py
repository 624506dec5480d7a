"""Content: cold items (too few interactions for the collaborative sources) matched to the categories of
the user's recent history, so new items get shown before they have a track record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import (
    CandidateSource,
    Catalog,
    Proposal,
    SourceRequest,
    TrainingData,
    rows_dot,
    rows_sum,
    top_positive,
)

GROUPED_ABOVE = 50_000  # cold items above which they are ranked per category combination (see _ColdGroups)


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
        self.groups = _ColdGroups.of(self.cold_items, self.cold_categories) \
            if len(self.cold_items) > GROUPED_ABOVE else None

    def propose(self, req: SourceRequest) -> Proposal:
        cats = self.catalog.item_categories
        profile = np.zeros(cats.shape[1], dtype=np.float32)
        ranked = None
        if not req.cold_user:
            profile = rows_sum(cats, req.recent).astype(np.float32, copy=False)
            profile /= max(1.0, float(len(req.recent)))
            if self.groups is not None:
                ranked = self.groups.top(profile, req.depth)
            elif len(self.cold_items):
                ranked = self.cold_items[top_positive(self.cold_categories @ profile, req.depth)]
        return Proposal(ranked, lambda items: {"content_score": rows_dot(cats, items, profile)})


class _ColdGroups:
    """Cold items grouped by their category row: an item's score is its row @ profile, so items of one group
    tie, and a request ranks the groups (a few thousand category combinations at most) rather than every cold
    item (most of a large catalog). Ties are broken by catalog row, lowest first."""

    def __init__(self, signatures: sp.csr_matrix, members: np.ndarray, starts: np.ndarray):
        self.signatures = signatures    # [G, C] the category row shared by each group
        self.members = members          # cold item rows, grouped, ascending within a group
        self.starts = starts            # [G + 1] group g is members[starts[g]:starts[g + 1]]

    @classmethod
    def of(cls, items: np.ndarray, rows: sp.csr_matrix) -> _ColdGroups:
        rows = rows.tocsr()
        rows.sort_indices()
        nnz = np.diff(rows.indptr)
        width = int(nnz.max()) if len(nnz) else 0
        key = np.full((rows.shape[0], 2 * width + 1), -1.0)  # (categories, weights) padded, and the count
        key[:, 0] = nnz
        pos = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], nnz)
        owner = np.repeat(np.arange(rows.shape[0]), nnz)
        key[owner, 1 + pos] = rows.indices
        key[owner, 1 + width + pos] = rows.data
        _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(first)))])
        return cls(rows[first], items[order], starts)

    def top(self, profile: np.ndarray, depth: int) -> np.ndarray:
        """The `depth` best cold items with a positive score: by score, then by row."""
        score = self.signatures @ profile
        positive = np.flatnonzero(score > 0)
        if not len(positive) or depth <= 0:
            return np.zeros(0, np.int64)
        groups = positive[np.argsort(-score[positive], kind="stable")]
        sizes = self.starts[groups + 1] - self.starts[groups]
        enough = int(np.searchsorted(np.cumsum(sizes), depth))  # groups[: enough + 1] hold `depth` items
        last = min(enough, len(groups) - 1)
        groups = groups[score[groups] >= score[groups[last]]]  # ... plus every group tied with the last one
        items = np.concatenate([self.members[self.starts[g]:self.starts[g + 1]] for g in groups])
        item_scores = np.repeat(score[groups], self.starts[groups + 1] - self.starts[groups])
        return items[np.lexsort((items, -item_scores))][:depth].astype(np.int64)
