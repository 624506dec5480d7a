"""NeuMF as a `recsys eval` baseline, fitted on the eval's training split (PyTorch, the optional `ncf` extra).

The other baselines' score functions read a user's training row (`baselines.ScoreFn`); NeuMF has a learned
embedding per user instead, so it scores by user row number, with the same top-k-over-unseen rule and the
same AUC sampling. Without PyTorch the eval notes the skip and goes on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recsys.evaluation.baselines import Interactions, top_k_unseen
from recsys.retrieval.ncf import INSTALL_HINT, NCFParams, NCFWeights, torch_available

if TYPE_CHECKING:
    from rich.progress import Progress

# The Microsoft Recommenders benchmark's NCF on MovieLens 100K under the same protocol (stratified 75/25 per
# item, seed 42, top-10 over unseen items): the article's number this baseline is reported beside.
MSR_NCF_NDCG10 = 0.396
BATCH = 512  # users scored at once


@dataclass
class NCFBaseline:
    data: Interactions
    weights: NCFWeights            # user row r = data.user_ids[r]; item j = data.item_ids[j]
    train_seconds: float

    def recommend(self, users: Sequence[str], k: int) -> dict[str, list[str]]:
        """Top-k unseen catalog items per user; users absent from training get nothing (as for the others)."""
        out: dict[str, list[str]] = {u: [] for u in users}
        known = [u for u in users if u in self.data.user_index]
        for lo in range(0, len(known), BATCH):
            chunk = known[lo : lo + BATCH]
            rows = [self.data.user_index[u] for u in chunk]
            tops = top_k_unseen(self.weights.score(np.array(rows)), self.data.matrix[rows], k)
            for u, top in zip(chunk, tops, strict=True):
                out[u] = self.data.item_ids[top].tolist()
        return out

    def score_items(self, items: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
        """Each user's logits of the given items (AUC); −inf for unknown users and items (`baselines.score_items`)."""
        index = {x: j for j, x in enumerate(self.data.item_ids.tolist())}
        out = {u: np.full(len(its), -np.inf) for u, its in items.items()}
        for u, its in items.items():
            r = self.data.user_index.get(u)
            cols = np.array([index.get(i, -1) for i in its], dtype=np.int64)
            ok = cols >= 0
            if r is not None and ok.any():
                out[u][ok] = self.weights.score(np.array([r]), cols[ok])[0]
        return out


def fit(data: Interactions, params: NCFParams, seed: int, progress: Progress | None = None,
        notes: list[str] | None = None) -> NCFBaseline | None:
    """NeuMF trained on the eval's training split, or None with a note when PyTorch is not installed."""
    if not torch_available():
        if notes is not None:
            notes.append(f"ncf skipped: PyTorch is not installed ({INSTALL_HINT})")
        return None
    from recsys.retrieval.ncf_torch import train_ncf

    t = time.time()
    weights = train_ncf(data.matrix, np.asarray(data.user_ids, dtype=str), params, seed, progress)
    seconds = time.time() - t
    if notes is not None:
        notes.append(f"ncf: NeuMF trained in {seconds:.1f} s, {weights.epochs} epochs chosen by early stopping "
                     f"(validation nDCG@10 {weights.valid_ndcg:.4f}){', then refit on the whole split' * params.refit}")
    return NCFBaseline(data, weights, seconds)


def versus_article(summary: Mapping) -> str | None:
    """One line putting the eval's NCF beside the article's (MSR benchmark) number, when NCF ran."""
    m = summary.get("systems", {}).get("ncf")
    if not m:
        return None
    k = summary.get("k")
    ndcg = m.get(f"ndcg@{k}")
    same = summary.get("protocol") == "msr" and k == 10 and "100k" in str(summary.get("dataset", "")).lower()
    where = "same protocol" if same else "NB: their number is ML-100K, msr, k=10"
    seconds = summary.get("ncf", {}).get("train_seconds", float("nan"))
    return (f"ncf nDCG@{k} {ndcg:.4f} (trained in {seconds:.1f} s) vs the Microsoft Recommenders benchmark's "
            f"NCF {MSR_NCF_NDCG10:.3f} on ML-100K ({where})")
