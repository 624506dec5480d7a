"""Sequence neighbours: items that users consume next to each other in time.

Co-occurrence over whole histories (EASE, ALS) says "people who watched A also watched B, at some point".
Adjacency in each user's time-ordered history says "B is watched right before or after A": sessions,
series, what a catalog page shows together. The table holds, per item, its adjacent items weighted by
count / sqrt(count_a * count_b), and a user's sequence score for an item is the sum over their recent
history, exactly like the item-to-item source.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def sequence_neighbors(user_codes: np.ndarray, item_codes: np.ndarray, timestamps: np.ndarray, n_items: int,
                       window: int = 1, m: int = 200) -> sp.csr_matrix:
    """Symmetric items x items table of time adjacency within `window` positions, top-m per item.

    Rows are interactions (user index, item index, time); ties in time keep their input order. Repeated
    consumption of the same item by a user does not count as adjacency to itself.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    order = np.lexsort((np.arange(len(user_codes)), timestamps, user_codes))
    u, i = user_codes[order], item_codes[order]
    rows, cols = [], []
    for off in range(1, window + 1):
        same = (u[off:] == u[:-off]) & (i[off:] != i[:-off])
        rows += [i[off:][same], i[:-off][same]]
        cols += [i[:-off][same], i[off:][same]]
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    adj = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_items, n_items))
    adj.sum_duplicates()
    if adj.nnz == 0:
        return adj
    degree = np.sqrt(np.asarray(adj.sum(axis=1)).ravel()).astype(np.float32)
    coo = adj.tocoo()
    vals = coo.data / (degree[coo.row] * degree[coo.col])
    # top-m per row: order by (row, -value) and keep each row's first m
    frame = pd.DataFrame({"r": coo.row, "c": coo.col, "v": vals}).sort_values(["r", "v"], ascending=[True, False],
                                                                              kind="stable")
    frame = frame[frame.groupby("r").cumcount() < m]
    return sp.csr_matrix((frame["v"].to_numpy(np.float32), (frame["r"].to_numpy(), frame["c"].to_numpy())),
                         shape=(n_items, n_items))
