"""A tiny run of `make bench`'s cache figures on the session cluster: a smoke test of the measurement
(never a timed assertion: the figures themselves belong to `make bench` on a quiet machine)."""

from __future__ import annotations

import uuid

import pytest

from recsys.bench_feedback import cache_latency

pytestmark = pytest.mark.integration


def test_cache_latency_measures_misses_then_hits_in_both_passes(cluster, small_dataset):
    users = [str(u) for u in small_dataset.interactions["user_id"].unique()[-12:]]
    out = cache_latency(cluster.target, users)
    n = len(users) - 1  # the first user only warms the channel
    assert {out[name]["n"] for name in ("miss", "hit", "noop", "hit_pass", "noop_pass")} == {n}
    assert out["hit"]["hit_ratio"] == 1.0 and out["hit_pass"]["hit_ratio"] == 1.0
    for name in ("miss", "hit", "noop", "hit_pass", "noop_pass"):
        assert 0 < out[name]["p50_ms"] <= out[name]["p99_ms"] <= out[name]["max_ms"]
    # a made-up user gets a cold-start answer, which is never cached: both of its calls compute
    cold = cache_latency(cluster.target, [users[0], f"bench-smoke-{uuid.uuid4().hex}"])
    assert cold["hit"]["hit_ratio"] == 0.0 and cold["hit_pass"]["hit_ratio"] == 0.0
