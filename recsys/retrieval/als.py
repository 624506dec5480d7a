"""Implicit-feedback matrix factorization (implicit's ALS) and fold-in of user vectors from a history.

Serving never stores user vectors: it folds a user's current history into the item factors with one
least-squares solve, which is exactly ALS's user step. So a user's retrieval reacts to new events at once,
and training and serving compute user vectors the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.arrays import unique_ints


@dataclass(frozen=True)
class ALSParams:
    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    seed: int = 42


def train_als(user_items: sp.csr_matrix, params: ALSParams, threads: int = 0) -> np.ndarray:
    """Fit ALS on a binary users x items matrix and return the item factors (float32 [I, f])."""
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(1, "blas"):
        # implicit parallelises itself; BLAS threads on top of that only oversubscribe the cores.
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            num_threads=threads,
            calculate_training_loss=False,
        )
        model.fit(user_items.astype(np.float32), show_progress=False)
    return np.ascontiguousarray(model.item_factors, dtype=np.float32)


class FoldIn:
    """Computes ALS user vectors from item histories: u = (YᵀY + αΣ y_i y_iᵀ + λI)⁻¹ (1+α) Σ y_i.

    Keeps a reference to the float32 factors (gathered rows are solved in float64), so growing the catalog
    never needs a float64 copy of it."""

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float):
        self.item_factors = item_factors
        y = item_factors.astype(np.float64)
        self.base = y.T @ y + regularization * np.eye(item_factors.shape[1])
        self.alpha = alpha

    def with_items(self, item_factors: np.ndarray, moved: np.ndarray) -> FoldIn:
        """A fold-in over the grown `item_factors`: rows past the current ones are new, rows `moved` have
        new vectors. YᵀY is updated by their outer products (O(changed x f²), not a pass over the catalog)."""
        n_old = len(self.item_factors)
        out = object.__new__(FoldIn)
        out.item_factors, out.alpha = item_factors, self.alpha
        new = item_factors[n_old:].astype(np.float64)
        base = self.base + new.T @ new
        if len(moved):
            before = self.item_factors[moved].astype(np.float64)
            after = item_factors[moved].astype(np.float64)
            base += after.T @ after - before.T @ before
        out.base = base
        return out

    def user_vector(self, history: np.ndarray) -> np.ndarray:
        """The user's vector for item indices `history` (zeros when empty)."""
        if len(history) == 0:
            return np.zeros(self.item_factors.shape[1], dtype=np.float32)
        y = self.item_factors[unique_ints(history)].astype(np.float64)
        a = self.base + self.alpha * (y.T @ y)
        b = (1.0 + self.alpha) * y.sum(axis=0)
        return np.linalg.solve(a, b).astype(np.float32)
