"""User segments (attribute=value, e.g. age=30): the items most over-represented among a segment's users.

The source for new users, who have attributes but no history."""

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
    lookup,
    nan_column,
    row_entries,
    unknown_if_added,
)

MIN_SEGMENT_USERS = 5


@register_source
class SegmentSource(CandidateSource):
    name = "segment"
    columns = ("segment_score",)
    relative = ("segment_score",)
    primary = "segment_score"
    quota = 0.05
    cold_quota = 0.5

    def __init__(self, catalog: Catalog, names: list[str], table: sp.csr_matrix):
        self.catalog = catalog
        self.names = names            # "attribute=value"
        self.table = table            # float32 [S, I] top items per segment, scores in [0, 1]
        self.row_of = {name: i for i, name in enumerate(names)}

    @classmethod
    def build(cls, data: TrainingData) -> SegmentSource:
        """Per segment, its popular items boosted mildly by their lift over global popularity."""
        x, top = data.x, data.cfg.segment_top
        groups: dict[str, list[int]] = {}
        for r, attrs in enumerate(data.tables.user_attributes):
            for k, v in attrs.items():
                groups.setdefault(f"{k}={v}", []).append(r)
        names = sorted(g for g, rows in groups.items() if len(rows) >= MIN_SEGMENT_USERS)
        glob = np.asarray(x.sum(axis=0)).ravel() + 1.0
        glob = glob / glob.sum()
        rows_out, cols_out, vals_out = [], [], []
        for s, name in enumerate(names):
            counts = np.asarray(x[groups[name]].sum(axis=0)).ravel()
            share = (counts + 1.0) / (counts.sum() + len(counts))
            score = counts * np.sqrt(share / glob)
            k = min(top, int((score > 0).sum()))
            if k == 0:
                continue
            idx = np.argpartition(-score, k - 1)[:k]
            rows_out.append(np.full(k, s))
            cols_out.append(idx)
            vals_out.append(score[idx] / score[idx].max())
        if not names or not rows_out:
            return cls(data.catalog, names, sp.csr_matrix((len(names), x.shape[1]), dtype=np.float32))
        table = sp.csr_matrix((np.concatenate(vals_out).astype(np.float32),
                               (np.concatenate(rows_out), np.concatenate(cols_out))), shape=(len(names), x.shape[1]))
        return cls(data.catalog, names, table)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> SegmentSource:
        return cls(catalog, list(meta["segment_names"]), sp.load_npz(directory / "segments.npz").tocsr())

    def save(self, directory: Path) -> dict[str, Any]:
        sp.save_npz(directory / "segments.npz", self.table)
        return {"segment_names": self.names}

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        """New items are in no segment's top list: the same entries, over a wider catalog."""
        t = self.table
        self.table = sp.csr_matrix((t.data, t.indices, t.indptr), shape=(t.shape[0], first + n))

    def scores(self, attributes: dict[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
        """(items in the user's segments, ascending; their mean score over those segments), None when the user
        is in no known segment. Sparse: the segments' top lists, never a catalog-sized row."""
        rows = [self.row_of[f"{k}={v}"] for k, v in attributes.items() if f"{k}={v}" in self.row_of]
        if not rows:
            return None
        indices, data = row_entries(self.table, np.asarray(rows))
        items, inverse = np.unique(indices, return_inverse=True)
        summed = np.zeros(len(items), np.float32)
        np.add.at(summed, inverse, data)  # float32, in row order: what the dense row sum computed
        return items.astype(np.int64), summed / np.float32(len(rows))

    def propose(self, req: SourceRequest) -> Proposal:
        seg = self.scores(req.attributes)
        if seg is None:
            return Proposal(None, lambda items: {"segment_score": nan_column(items)})
        items_in, scores_in = seg
        pos = scores_in > 0
        top, top_scores = items_in[pos], scores_in[pos]
        ranked = top[np.argsort(-top_scores, kind="stable")][: req.depth]
        return Proposal(ranked, lambda items: {"segment_score": unknown_if_added(lookup(items_in, scores_in, items),
                                                                                 items, self.catalog)})
