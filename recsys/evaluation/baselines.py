"""Reference recommenders the serving pipeline is compared with: most popular, dense EASE and plain ALS.

They are deliberately separate, minimal implementations fitted on the same training split: they are
yardsticks (the pipeline has to beat a strong classical model, and any model has to beat popularity),
not the system under test, which is always measured through the serving code. Dense EASE runs whenever
its items² matrix fits a memory budget (`fit_ease`), not up to a fixed catalog size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from recsys.retrieval.als import ALSParams, FoldIn, train_als

EASE_MEMORY_FRACTION = 0.5  # default budget of dense EASE: this share of the memory available at the start
EASE_DTYPE = np.dtype(np.float32)  # same lists as float64 on MovieLens 100K (942 of 943 identical, nDCG equal)
GB = 1e9
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


def available_memory() -> int | None:
    """Bytes of memory available now: MemAvailable of /proc/meminfo, else physical memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def ease_memory_bytes(x: sp.csr_matrix, dtype: np.dtype = EASE_DTYPE) -> int:
    """Peak memory of `ease_weights` on x: the dense items² matrix (Gram, inverted and turned into B in place)
    plus the sparse XᵀX it is built from, of at most Σ_u (items of u)² entries (value and 8-byte index)."""
    n = x.shape[1]
    size = np.dtype(dtype).itemsize
    per_user = np.diff(x.indptr).astype(np.int64)
    gram_nnz = min(n * n, int((per_user**2).sum()))
    return n * n * size + gram_nnz * (size + 8)


def ease_budget(budget_gb: float | None = None) -> tuple[int, str]:
    """EASE's memory budget in bytes and where it comes from: `budget_gb` if given (0 turns EASE off), else
    EASE_MEMORY_FRACTION of the memory available now (0 when that is unknown)."""
    if budget_gb is not None:
        return int(budget_gb * GB), "--ease-memory-gb"
    avail = available_memory()
    if avail is None:
        return 0, "available memory unknown"
    return int(EASE_MEMORY_FRACTION * avail), f"{EASE_MEMORY_FRACTION:.0%} of {avail / GB:.1f} GB available"


def _spd_inverse_in_place(a: np.ndarray, block: int = 512) -> np.ndarray:
    """The inverse of a symmetric positive definite, C-contiguous matrix, written over it (LAPACK potrf +
    potri on the same memory seen in Fortran order: no second items² matrix)."""
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    c, info = potrf(a.T, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        c, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky inversion failed (LAPACK info {info})")
    if not np.shares_memory(c, a):  # LAPACK copied after all: keep the contract, at the cost of a copy
        a[...] = c.T
    # potri filled the upper triangle of a.T, i.e. the lower one of a: mirror it, a block of rows at a time
    n = a.shape[0]
    for s in range(0, n, block):
        e = min(n, s + block)
        a[s:e, e:] = a[e:, s:e].T
        diag_block = a[s:e, s:e]
        upper = np.triu_indices(e - s, 1)
        diag_block[upper] = diag_block.T[upper]
    return a


def ease_weights(x: sp.csr_matrix, reg: float = 400.0, dtype: np.dtype = EASE_DTYPE) -> np.ndarray:
    """EASE (Steck, 2019): B = I − P·diagMat(1/diag(P)), P = (XᵀX + λI)⁻¹, with diag(B) = 0.

    XᵀX + λI is symmetric positive definite (λ > 0), so P comes from a Cholesky inversion in place, and B
    is P scaled in place: the peak is one dense items² matrix in `dtype` (see `ease_memory_bytes`).
    """
    xd = x.astype(dtype)
    gram = xd.T @ xd
    g = gram.toarray()
    del gram
    g[np.diag_indices_from(g)] += reg
    p = _spd_inverse_in_place(g)
    p /= -np.diag(p).copy()[None, :]
    p[np.diag_indices_from(p)] = 0.0
    return p


def ease_scorer(data: Interactions, reg: float = 400.0, dtype: np.dtype = EASE_DTYPE) -> ScoreFn:
    """Dense EASE's full score function X·B (the untruncated model), fitted once for lists and AUC."""
    b = ease_weights(data.matrix, reg, dtype)
    return lambda x: x @ b


def fit_ease(
    data: Interactions, reg: float = 400.0, budget_gb: float | None = None, dtype: np.dtype = EASE_DTYPE
) -> tuple[ScoreFn | None, str]:
    """Dense EASE's score function if its peak memory fits the budget (`ease_budget`), else None; and a note
    saying which, with the memory it needs. The fit uses every core: it is one large LAPACK call."""
    need = ease_memory_bytes(data.matrix, dtype)
    budget, source = ease_budget(budget_gb)
    size = f"{data.matrix.shape[1]:,} items in {np.dtype(dtype).name} need ~{need / GB:.2f} GB"
    if need > budget:
        return None, f"ease skipped: {size}, over its budget of {budget / GB:.2f} GB ({source}; set --ease-memory-gb)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with threadpool_limits(cores, user_api="blas"):
        score = ease_scorer(data, reg, dtype)
    return score, f"ease: λ = {reg:g}; {size} (budget {budget / GB:.2f} GB: {source})"


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
