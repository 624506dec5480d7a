"""Reference recommenders the serving pipeline is compared with: most popular, dense EASE and plain ALS.

They are deliberately separate, minimal implementations fitted on the same training split: they are
yardsticks (the pipeline has to beat a strong classical model, and any model has to beat popularity),
not the system under test, which is always measured through the serving code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.retrieval.als import ALSParams, FoldIn, train_als

EASE_MAX_ITEMS = 12_000  # a dense float64 Gram matrix of this size takes ~1.2 GB to invert
ScoreFn = Callable[[sp.csr_matrix], np.ndarray]  # users' training rows -> [users, catalog items] scores


class Interactions:
    """The training split as a binary users x items matrix over a fixed item catalog."""

    def __init__(self, train: pd.DataFrame, catalog: list[str]):
        self.item_ids = np.asarray(catalog, dtype=object)
        item_index = {x: j for j, x in enumerate(catalog)}
        self.user_ids = sorted(train["user_id"].unique().tolist())
        self.user_index = {u: r for r, u in enumerate(self.user_ids)}
        rows = train["user_id"].map(self.user_index).to_numpy()
        cols = train["item_id"].map(item_index).to_numpy()
        keep = ~pd.isna(cols)
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (rows[keep].astype(np.int64), cols[keep].astype(np.int64))),
            shape=(len(self.user_ids), len(catalog)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        self.matrix = m

    def item_popularity(self) -> np.ndarray:
        """Distinct training users per catalog item."""
        return np.asarray(self.matrix.sum(axis=0)).ravel()


def top_k_unseen(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> list[np.ndarray]:
    """Each row's k best-scoring item indices, best first, without the row's seen items.

    Ties go to the lower item index (stable sort), so results do not depend on the platform.
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    r, c = seen.nonzero()
    s[r, c] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [row[np.isfinite(s[u, row])] for u, row in enumerate(top)]


def _recommend(data: Interactions, users: list[str], score_fn: ScoreFn, k: int) -> dict[str, list[str]]:
    """Top-k unseen items for each user by score_fn(user rows of X) -> scores; unknown users get nothing."""
    known = [u for u in users if u in data.user_index]
    out: dict[str, list[str]] = {u: [] for u in users}
    batch = max(1, min(2048, 20_000_000 // max(1, data.matrix.shape[1])))  # ≤ 160 MB of float64 scores
    for start in range(0, len(known), batch):
        chunk = known[start : start + batch]
        x = data.matrix[[data.user_index[u] for u in chunk]]
        for u, row in zip(chunk, top_k_unseen(score_fn(x), x, k), strict=True):
            out[u] = data.item_ids[row].tolist()
    return out


def popularity(data: Interactions, users: list[str], k: int) -> dict[str, list[str]]:
    """The k items with the most distinct training users, minus each user's training items."""
    order = np.argsort(-data.item_popularity(), kind="stable")
    m = data.matrix
    out: dict[str, list[str]] = {}
    for u in users:
        r = data.user_index.get(u)
        seen = set() if r is None else set(m.indices[m.indptr[r] : m.indptr[r + 1]].tolist())
        top = [j for j in order[: k + len(seen)].tolist() if j not in seen][:k]
        out[u] = data.item_ids[top].tolist()
    return out


def ease_weights(x: sp.csr_matrix, reg: float = 400.0) -> np.ndarray:
    """EASE (Steck, 2019): B = I − P·diagMat(1/diag(P)), P = (XᵀX + λI)⁻¹, with diag(B) = 0."""
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += reg
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def ease_scorer(data: Interactions, reg: float = 400.0) -> ScoreFn:
    """Dense EASE's full score function X·B (the untruncated model), fitted once for lists and AUC."""
    b = ease_weights(data.matrix, reg)
    return lambda x: x @ b


def ease(data: Interactions, users: list[str], k: int, reg: float = 400.0) -> dict[str, list[str]]:
    """Dense EASE scores X·B (the full, untruncated model), top-k unseen."""
    return _recommend(data, users, ease_scorer(data, reg), k)


def als_scorer(data: Interactions, params: ALSParams) -> ScoreFn:
    """implicit's ALS fitted on the training split, users folded in from their items (as serving does):
    the full dot-product score function."""
    factors = train_als(data.matrix, params).astype(np.float64)
    fold = FoldIn(factors, params.regularization, params.alpha)

    def score(x: sp.csr_matrix) -> np.ndarray:
        vecs = np.stack([fold.user_vector(x[r].indices) for r in range(x.shape[0])]).astype(np.float64)
        return vecs @ factors.T

    return score


def als(data: Interactions, users: list[str], k: int, params: ALSParams) -> dict[str, list[str]]:
    """implicit's ALS fitted on the training split, top-k unseen by dot product (see `als_scorer`)."""
    return _recommend(data, users, als_scorer(data, params), k)


def popularity_scorer(data: Interactions) -> ScoreFn:
    """Every user's score of an item is its count of distinct training users (what `popularity` ranks by)."""
    pop = data.item_popularity().astype(np.float64)
    return lambda x: np.broadcast_to(pop, (x.shape[0], len(pop)))


def recommend(data: Interactions, users: list[str], score_fn: ScoreFn, k: int) -> dict[str, list[str]]:
    """Top-k unseen items of each user by a fitted score function (unknown users get nothing)."""
    return _recommend(data, users, score_fn, k)


def score_items(data: Interactions, score_fn: ScoreFn, items: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Each user's scores of the given items (AUC needs scores of sampled items, not just a top-k).

    Users absent from training and items outside the catalog are unscored: −inf, below every scored item.
    """
    index = {x: j for j, x in enumerate(data.item_ids.tolist())}
    out = {u: np.full(len(its), -np.inf) for u, its in items.items()}
    known = [u for u in items if u in data.user_index]
    batch = max(1, min(2048, 20_000_000 // max(1, data.matrix.shape[1])))
    for start in range(0, len(known), batch):
        chunk = known[start : start + batch]
        scores = np.asarray(score_fn(data.matrix[[data.user_index[u] for u in chunk]]), dtype=np.float64)
        for row, u in enumerate(chunk):
            cols = [index.get(i, -1) for i in items[u]]
            ok = np.array([c >= 0 for c in cols], dtype=bool)
            out[u][ok] = scores[row, np.asarray(cols)[ok]]
    return out


def item_popularity_counts(train: pd.DataFrame) -> Mapping[str, int]:
    """Distinct training users per item id (for novelty and the popularity plots)."""
    return train.drop_duplicates(["user_id", "item_id"])["item_id"].value_counts().to_dict()
