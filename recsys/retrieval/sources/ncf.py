"""NeuMF (neural collaborative filtering) as a candidate source and ranker feature; off unless configured.

Trained with PyTorch at `recsys train` time when `ncf` is in the training config's `sources`, saved as numpy
arrays (ncf.npz) and scored with numpy: candidate_svc never imports torch. NeuMF learns one embedding per
user id, so it answers only users who were in the training data and have a history; anyone else (new users,
forgotten users, whose history is empty) gets NaN columns and no proposals. A user's interactions after
training do not move their embedding until the next training.

`ncf.propose: false` keeps the score columns (ranker features) and skips proposing, which costs a full
catalog pass per request (items × the MLP's width), for an optional source the only cost that grows with
the catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recsys.retrieval.ncf import NCFWeights, TorchMissing, torch_available
from recsys.retrieval.sources import register_source
from recsys.retrieval.sources.base import CandidateSource, Catalog, Proposal, SourceRequest, TrainingData, rank_in

FILE = "ncf.npz"


@register_source
class NCFSource(CandidateSource):
    name = "ncf"
    columns = ("ncf_score", "ncf_rank")
    relative = ("ncf_score",)
    primary = "ncf_score"
    quota = 0.15

    def __init__(self, catalog: Catalog, weights: NCFWeights, propose_items: bool = True):
        self.catalog, self.weights, self.propose_items = catalog, weights, propose_items
        self.row_of = {u: r for r, u in enumerate(weights.user_ids.tolist())}

    @classmethod
    def build(cls, data: TrainingData) -> NCFSource:
        """Trains NeuMF on the users with interactions (others would keep random embeddings)."""
        if not torch_available():
            raise TorchMissing("the ncf candidate source (training config `sources`)")
        from recsys.retrieval.ncf_torch import train_ncf

        active = np.flatnonzero(np.diff(data.x.indptr))
        weights = train_ncf(data.x[active], data.tables.user_ids[active], data.cfg.ncf, data.cfg.seed)
        return cls(data.catalog, weights, data.cfg.ncf.propose)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], catalog: Catalog) -> NCFSource | None:
        info = meta.get("ncf")
        if info is None or not (directory / FILE).is_file():
            return None
        return cls(catalog, NCFWeights.load(directory / FILE, info), bool(info.get("propose", True)))

    def save(self, directory: Path) -> dict[str, Any]:
        return {"ncf": self.weights.save(directory / FILE) | {"propose": self.propose_items}}

    def start(self, index: str) -> None:
        self.weights.item_first_layer()  # computed once, before requests

    def propose(self, req: SourceRequest) -> Proposal:
        row = -1 if req.cold_user else self.row_of.get(req.user_id, -1)
        if row < 0:
            return Proposal(None, lambda items: {"ncf_score": np.full(len(items), np.nan, np.float32),
                                                 "ncf_rank": rank_in(None, items)})
        w, user = self.weights, np.array([row])
        if not self.propose_items:
            return Proposal(None, lambda items: {"ncf_score": _scores(w, user, items),
                                                 "ncf_rank": rank_in(None, items)})
        scores = w.score(user)[0]
        depth = min(max(req.depth, 1), len(scores))
        ranked = np.argpartition(-scores, depth - 1)[:depth] if depth < len(scores) else np.arange(len(scores))
        ranked = ranked[np.argsort(-scores[ranked], kind="stable")]
        return Proposal(ranked, lambda items: {"ncf_score": _lookup(scores, items), "ncf_rank": rank_in(ranked, items)})


def _lookup(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Scores of catalog rows, NaN for rows the model was not trained with (items added at run time)."""
    out = np.full(len(items), np.nan, dtype=np.float32)
    ok = items < len(scores)
    out[ok] = scores[items[ok]]
    return out


def _scores(w: NCFWeights, user: np.ndarray, items: np.ndarray) -> np.ndarray:
    out = np.full(len(items), np.nan, dtype=np.float32)
    ok = items < w.n_items
    if ok.any():
        out[ok] = w.score(user, items[ok])[0]
    return out
