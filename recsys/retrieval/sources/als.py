"""ALS + FAISS: the user's history folded into ALS item factors, nearest items by inner product.

Items added at run time (CandidateGenerator.add_items) are appended to the live FAISS index; searches and
appends share `index_lock`, because a FAISS index must not be searched while it is being added to. Slots of
the index map to catalog rows through `item_of_slot` once the catalog has grown: an item added at run time
whose vector later changes gets a new slot and its old one is retired (FAISS HNSW cannot remove vectors).
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.retrieval.als import ALSParams, FoldIn
from recsys.retrieval.ann import build_index, search
from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData, rank_in

ADD_CHUNK = 64  # vectors appended per hold of index_lock (an HNSW insert costs ~0.1 ms per vector)


@register_source
class ALSSource(CandidateSource):
    name = "als"
    columns = ("als_score", "als_rank")
    relative = ("als_score",)
    primary = "als_score"
    quota = 0.35

    def __init__(self, catalog: Catalog, params: ALSParams):
        self.catalog = catalog
        self.params = params
        self.index: faiss.Index | None = None
        self.index_lock = threading.Lock()
        self.item_of_slot: np.ndarray | None = None   # None = slot i is row i (the catalog never grew)
        self.retired = 0                              # slots mapped to no row

    @classmethod
    def build(cls, data: TrainingData) -> ALSSource:
        return cls(data.catalog, data.cfg.als)  # the factors are the catalog's embeddings

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> ALSSource:
        return cls(catalog, ALSParams(**meta["als"]))

    def save(self, directory: Path) -> dict[str, Any]:
        return {"als": asdict(self.params)}

    def start(self, index: str) -> None:
        factors = self.catalog.item_factors
        trained = self.catalog.n_trained
        self.fold_in = FoldIn(factors, self.params.regularization, self.params.alpha)
        self.index_lock = threading.Lock()
        self.item_of_slot, self.retired = None, 0
        prebuilt = self.catalog.source_dir / f"faiss-{index}.index" if self.catalog.source_dir else None
        if prebuilt is not None and prebuilt.is_file():
            self.index = faiss.read_index(str(prebuilt))
            if self.index.ntotal != trained or self.index.d != factors.shape[1]:
                raise ValueError(f"{prebuilt}: index holds {self.index.ntotal}x{self.index.d} vectors, "
                                 f"the bundle has {trained}x{factors.shape[1]}")
            if trained < len(factors):  # a catalog grown at run time, restarted by another generator
                self.index.add(np.ascontiguousarray(factors[trained:]))
        else:
            self.index = build_index(factors, index)

    def add_items(self, first: int, n: int, changed: np.ndarray) -> None:
        factors = self.catalog.item_factors
        old = self.fold_in.item_factors
        moved = changed[(changed >= self.catalog.n_trained) & (changed < len(old))]
        moved = moved[(factors[moved] != old[moved]).any(axis=1)] if len(moved) else moved
        self.fold_in = self.fold_in.with_items(factors, moved)
        rows = np.concatenate([moved, np.arange(first, first + n)]).astype(np.int64)
        if not len(rows):
            return
        slots = np.arange(first) if self.item_of_slot is None else self.item_of_slot.copy()
        retired = self.retired
        if len(moved):
            gone = np.isin(slots, moved)
            slots[gone] = -1
            retired += int(gone.sum())
        vecs = np.ascontiguousarray(factors[rows], dtype=np.float32)
        with self.index_lock:
            start = self.index.ntotal
        for lo in range(0, len(vecs), ADD_CHUNK):  # the lock is released between chunks: searches go on
            with self.index_lock:
                self.index.add(vecs[lo:lo + ADD_CHUNK])
        # Slots a failed earlier call added (no copy ever mapped them) stay retired.
        lost = start - len(slots)
        self.item_of_slot = np.concatenate([slots, np.full(lost, -1), rows])
        self.retired = retired + lost

    def _search(self, user_vec: np.ndarray, depth: int) -> np.ndarray:
        with self.index_lock:
            slots, _ = search(self.index, user_vec, depth + self.retired)
        if self.item_of_slot is None:
            return slots[slots < self.catalog.n_items][:depth]
        slots = slots[slots < len(self.item_of_slot)]  # appended after this copy was made: not ours yet
        items = self.item_of_slot[slots]
        return items[items >= 0][:depth]

    def propose(self, req: SourceRequest) -> Proposal:
        if req.cold_user:
            return Proposal(None, lambda items: {"als_score": np.full(len(items), np.nan, np.float32),
                                                 "als_rank": rank_in(None, items)})
        user_vec = self.fold_in.user_vector(req.history)
        ranked = self._search(user_vec, req.depth)
        return Proposal(ranked, lambda items: {"als_score": self.catalog.item_factors[items] @ user_vec,
                                               "als_rank": rank_in(ranked, items)})
