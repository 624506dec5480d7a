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


def test_recommend_while_ingesting_has_quiet_rate_and_control_windows(small_bundle, small_dataset, tmp_path):
    """Its own cluster: the events it streams must not reach the session cluster's users."""
    from recsys.bench_feedback import interleaved
    from recsys.cluster import start_cluster
    from recsys.stream import open_stream, topic_url

    users = [str(u) for u in small_dataset.interactions["user_id"].unique()]
    items = [str(i) for i in small_dataset.interactions["item_id"].unique()[:50]]
    with start_cluster(small_bundle, port=0, metrics=False, log_dir=tmp_path / "logs") as c:
        out = interleaved(c.target, c.stream, users[:36], items, [0.0, 3000.0], rounds=2, n=6, settle_s=0.2,
                          event_users=users[-10:])
        with open_stream(topic_url(c.stream, "bench-control")) as unread:
            assert unread.length() > 0  # the control's batches went to the sibling stream
    assert list(out) == ["quiet", "3000 events/s", "3000 events/s to an unread stream (control)"]
    assert all(row["n"] == 12 and row["windows"] == 2 for row in out.values())
    assert out["quiet"]["events_per_s_sent"] == 0
    rate, control = out["3000 events/s"], out["3000 events/s to an unread stream (control)"]
    assert rate["events_per_s_sent"] > 0 and control["events_per_s_sent"] > 0
    for row, keys in ((rate, ("", "_vs_control")), (control, ("",))):
        for suffix in keys:
            lo, hi = row[f"p99_change{suffix}_ci_pct"]
            assert lo <= hi
