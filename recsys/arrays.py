"""Small array helpers for the request path."""

from __future__ import annotations

import numpy as np


def unique_ints(a: np.ndarray) -> np.ndarray:
    """np.unique(a) for an integer array: its distinct values, ascending.

    numpy 2.4 answers np.unique without return_index/return_inverse from a hash table, which at the sizes
    a request sees (tens to a few thousand item codes) took 4-5x as long as sorting and dropping repeats:
    278 vs 75 us for 3,000 codes on the 2-core bench machine."""
    s = np.sort(a, axis=None)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]
