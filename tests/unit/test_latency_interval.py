"""The bootstrap interval that every p99 comparison of the bench reports."""

from __future__ import annotations

import numpy as np

from recsys.latency import p99_change_interval


def test_the_interval_holds_the_true_change_and_shrinks_with_more_calls() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(0.0, 0.3, 4000)
    slower = base * 1.2  # every call 20% slower: p99 +20%
    lo, hi = p99_change_interval(base, slower)
    assert lo < 20.0 < hi
    small = p99_change_interval(base[:400], slower[:400])
    assert (small[1] - small[0]) > (hi - lo)


def test_the_same_sample_twice_changes_nothing() -> None:
    base = np.random.default_rng(2).exponential(1.0, 2000)
    lo, hi = p99_change_interval(base, base.copy())
    assert lo <= 0.0 <= hi and hi - lo < 30.0
