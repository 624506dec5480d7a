"""The bench's tracing figure (recsys/bench_tracing.py): fresh clusters per set, an untraced twin as the
noise reference, and every traced Recommend exported as the seven spans of its three services."""

from __future__ import annotations

import math
import random

import pytest
from rich.console import Console

from recsys.bench_tracing import tracing_cost
from recsys.feature_tables import FeatureTables

pytestmark = pytest.mark.integration


def test_tracing_cost_reads_the_cost_against_an_untraced_twin(small_bundle):
    users = FeatureTables.load(small_bundle / "features").user_ids.tolist()
    out = tracing_cost(small_bundle, users, random.Random(0), Console(quiet=True), requests=6, rounds=2,
                       ratio=None, sets=2)
    assert set(out) >= {"off", "off twin", "on", "noise_p50_pct", "noise_p99_pct", "p99_cost_pct"}
    for arm in ("off", "off twin", "on"):
        assert out[arm]["errors"] == 0 and out[arm]["n"] == 2 * 6  # two sets of one round each
    assert math.isfinite(out["noise_p99_pct"]) and out["noise_p99_pct"] == out["off twin"]["p99_cost_pct"]
    # cache off: each call is one Recommend span, three client spans and their three server spans
    assert 6.5 <= out["on"]["spans_per_call"] <= 7.0
    assert "spans_exported" not in out["off twin"]  # untraced: nothing reached the collector
    # the CPU each service spent per call, per arm, and tracing's share of it beside the tail's interval
    assert set(out["on"]["cpu_ms_per_call"]) == {"feature_svc", "candidate_svc", "ranker_svc"}
    for arm in ("off", "on"):  # /proc counts in 10 ms ticks: a dozen calls may leave a service at 0
        assert sum(out[arm]["cpu_ms_per_call"].values()) > 0
        assert all(ms >= 0 for ms in out[arm]["cpu_ms_per_call"].values())
    assert math.isfinite(out["cpu_cost_ms_per_call"])
    assert out["cpu_cost_ms_per_call"] == out["on"]["cpu_cost_ms_per_call"]
    lo, hi = out["p99_cost_ci_pct"]
    assert lo <= hi
    lo, hi = out["p99_cost_vs_untraced_ci_pct"]
    assert lo <= hi and math.isfinite(out["p99_cost_vs_untraced_pct"])
