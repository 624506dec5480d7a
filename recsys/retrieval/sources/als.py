"""ALS + FAISS: the user's history folded into ALS item factors, nearest items by inner product."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.retrieval.als import ALSParams, FoldIn
from recsys.retrieval.ann import build_index, search
from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData, rank_in


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
        self.fold_in = FoldIn(factors, self.params.regularization, self.params.alpha)
        prebuilt = self.catalog.source_dir / f"faiss-{index}.index" if self.catalog.source_dir else None
        if prebuilt is not None and prebuilt.is_file():
            self.index = faiss.read_index(str(prebuilt))
            if self.index.ntotal != len(factors) or self.index.d != factors.shape[1]:
                raise ValueError(f"{prebuilt}: index holds {self.index.ntotal}x{self.index.d} vectors, "
                                 f"the bundle has {factors.shape[0]}x{factors.shape[1]}")
        else:
            self.index = build_index(factors, index)

    def propose(self, req: SourceRequest) -> Proposal:
        if req.cold_user:
            return Proposal(None, lambda items: {"als_score": np.full(len(items), np.nan, np.float32),
                                                 "als_rank": rank_in(None, items)})
        user_vec = self.fold_in.user_vector(req.history)
        ranked, _ = search(self.index, user_vec, req.depth)
        return Proposal(ranked, lambda items: {"als_score": self.catalog.item_factors[items] @ user_vec,
                                               "als_rank": rank_in(ranked, items)})
