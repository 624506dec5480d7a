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
BATCH_SEARCH_ABOVE = 50_000  # catalog items above which `prefetch` searches many users in one call
PREFETCH_KEEP = 8192         # prefetched users held at most (each ~10 KB at 300 candidates)


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
        # history bytes -> (user vector, slots best first, k searched): see prefetch
        self._prefetched: dict[bytes, tuple[np.ndarray, np.ndarray, int]] = {}

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
        self._prefetched = {}  # searched before the catalog grew
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

    def prefetch(self, histories: list[np.ndarray], depth: int) -> None:
        """Search for many users at once, ahead of their requests (offline runs: training, evaluation).

        A request whose history is one of these then reads its slots from the batch instead of searching alone:
        one search call for thousands of users costs a fraction of as many single searches on a large catalog
        (the exact index turns them into one matrix product). Histories already held from an earlier batch
        are not searched again; the oldest others are dropped past PREFETCH_KEEP. Only above BATCH_SEARCH_ABOVE
        items: on small catalogs single searches are cheap, and they stay exactly as served (a batched exact
        search may order near-equal scores differently, in their last bit)."""
        if self.catalog.n_items <= BATCH_SEARCH_ABOVE or self.index is None:
            self._prefetched = {}
            return
        k = min(depth + self.retired, self.index.ntotal)
        wanted = {h.tobytes(): h for h in histories if len(h)}
        held = {key: hit for key, hit in self._prefetched.items() if hit[2] >= k}
        missing = [key for key in wanted if key not in held]
        fresh: dict[bytes, tuple[np.ndarray, np.ndarray, int]] = {}
        if missing:
            vecs = np.stack([self.fold_in.user_vector(wanted[key]) for key in missing])
            with self.index_lock:
                _, slots = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
            fresh = {key: (vec, row[row >= 0], k) for key, vec, row in zip(missing, vecs, slots, strict=True)}
        older = [key for key in held if key not in wanted]
        older = older[max(0, len(older) + len(wanted) - PREFETCH_KEEP):]
        self._prefetched = {key: held[key] for key in older} | {key: held.get(key) or fresh[key] for key in wanted}

    def _search(self, user_vec: np.ndarray, depth: int, batch: np.ndarray | None = None) -> np.ndarray:
        if batch is not None:
            slots = batch[: depth + self.retired]
        else:
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
        hit = self._prefetched.get(req.history.tobytes()) if self._prefetched else None
        if hit is not None and hit[2] >= min(req.depth + self.retired, self.index.ntotal):
            user_vec, batch = hit[0], hit[1]
        else:
            user_vec, batch = self.fold_in.user_vector(req.history), None
        ranked = self._search(user_vec, req.depth, batch)
        return Proposal(ranked, lambda items: {"als_score": self.catalog.item_factors[items] @ user_vec,
                                               "als_rank": rank_in(ranked, items)})
