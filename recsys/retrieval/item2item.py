"""Item-to-item neighbour tables: EASE for catalogs that fit a dense Gram matrix, cosine otherwise.

Either way the result is a sparse items x items matrix of the top-M neighbours per item, so a user's
item-to-item scores are one sparse row sum over their history, whatever the catalog size.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EASE_MAX_ITEMS = 12_000  # dense float32 Gram matrix of this size is ~0.6 GB


def _top_m_per_row(dense_rows: np.ndarray, m: int):
    """The m largest-magnitude entries per row of a dense matrix, as COO triplets.

    Negative EASE weights matter: dropping them costs ~0.02 nDCG@10 on MovieLens 100K, while keeping
    the 400 largest |weights| per item reproduces the dense model's ranking.
    """
    m = min(m, dense_rows.shape[1] - 1)
    idx = np.argpartition(-np.abs(dense_rows), m, axis=1)[:, :m]
    vals = np.take_along_axis(dense_rows, idx, axis=1)
    rows = np.repeat(np.arange(dense_rows.shape[0]), m)
    keep = vals.ravel() != 0
    return rows[keep], idx.ravel()[keep], vals.ravel()[keep]


def ease_weights(user_items: sp.csr_matrix, reg: float = 400.0) -> np.ndarray:
    """EASE (Steck, 2019): the dense item-to-item weights B (float32 [n, n], zero diagonal)."""
    x = user_items.astype(np.float32)
    n = x.shape[1]
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices(n)] += reg
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n)] = 0.0
    return b.astype(np.float32)


def truncated(b: np.ndarray, m: int) -> sp.csr_matrix:
    """The m largest |weights| per item of a dense weight matrix, as the sparse table the source serves."""
    rows, cols, vals = _top_m_per_row(b, m)
    return sp.csr_matrix((vals, (rows, cols)), shape=b.shape, dtype=np.float32)


def ease_neighbors(user_items: sp.csr_matrix, reg: float = 400.0, m: int = 400) -> sp.csr_matrix:
    """EASE weights B, truncated to the m largest |weights| per item."""
    return truncated(ease_weights(user_items, reg), m)


def cosine_neighbors(user_items: sp.csr_matrix, m: int = 100, shrink: float = 10.0,
                     block: int = 2048) -> sp.csr_matrix:
    """Shrunk cosine similarity of item co-occurrence, top-m per item, computed in row blocks."""
    x = sp.csc_matrix(user_items.astype(np.float32))
    x.data[:] = 1.0
    n = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()) + 1e-9
    xt = sp.csr_matrix(x.T)
    out_r, out_c, out_v = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        co = (xt[start:stop] @ x).tocsr()  # co-occurrence counts of this block of items
        co = co.tocoo()
        r, c, v = co.row, co.col, co.data
        keep = (r + start) != c
        r, c, v = r[keep], c[keep], v[keep]
        sim = v / (norms[r + start] * norms[c] + shrink)
        # keep the top-m per row: sort by (row, -sim) and take the first m of each row
        order = np.lexsort((-sim, r))
        r, c, sim = r[order], c[order], sim[order]
        starts = np.searchsorted(r, np.arange(stop - start))
        rank = np.arange(len(r)) - starts[r]
        sel = rank < m
        out_r.append(r[sel] + start)
        out_c.append(c[sel])
        out_v.append(sim[sel].astype(np.float32))
    rows = np.concatenate(out_r) if out_r else np.zeros(0, int)
    cols = np.concatenate(out_c) if out_c else np.zeros(0, int)
    vals = np.concatenate(out_v) if out_v else np.zeros(0, np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)


def item_neighbors(user_items: sp.csr_matrix, ease_reg: float = 400.0, m: int = 400) -> tuple[sp.csr_matrix, str]:
    """EASE when the catalog is small enough, cosine otherwise; returns the table and the method used."""
    if user_items.shape[1] <= EASE_MAX_ITEMS:
        return ease_neighbors(user_items, reg=ease_reg, m=m), "ease"
    return cosine_neighbors(user_items, m=min(m, 100)), "cosine"
