"""Assignment (docs/experiments.md): the golden vectors, the split against its targets on 100,000 units,
independent layers, and coverage ramps that only add units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from recsys.experiments.assignment import (
    BUCKETS,
    arm_bounds,
    assign,
    bucket,
    covered_range,
    fnv1a32,
    in_holdout,
)

VECTORS = json.loads((Path(__file__).parent / "assignment_vectors.json").read_text(encoding="utf-8"))
UNITS = [f"user-{i}" for i in range(100_000)]


def test_the_hash_is_standard_fnv1a_32() -> None:
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    assert fnv1a32(b"foobar") == 0xBF9CF968
    for case in VECTORS["fnv1a32"]:
        assert fnv1a32(case["input"].encode()) == case["fnv1a32"], case


def test_the_golden_vectors_hold() -> None:
    assert len(VECTORS["assign"]) >= 50
    for case in VECTORS["arm_bounds"]:
        assert arm_bounds(case["weights"]) == case["bounds"], case
    for case in VECTORS["assign"]:
        got = assign(case["unit"], case["layer_salt"], tuple(case["layer_range"]), case["coverage"],
                     case["experiment_salt"], case["weights"])
        assert (got.layer_bucket, got.arm_bucket, got.arm) == (case["layer_bucket"], case["arm_bucket"],
                                                               case["arm"]), case
    for case in VECTORS["holdout"]:
        assert bucket(case["salt"], case["unit"]) == case["bucket"]
        assert in_holdout(case["unit"], case["salt"], case["share"]) is case["held_out"]
    assert {c["arm"] is None for c in VECTORS["assign"]} == {True, False}  # both outcomes are pinned


@pytest.mark.parametrize("weights", [[0.5, 0.5], [1, 1, 1], [0.9, 0.1], [0.25, 0.25, 0.5]])
def test_every_arm_gets_its_share_within_3_29_sigma_on_100k_units(weights: list[float]) -> None:
    arms = np.array([assign(u, "layer", (0, BUCKETS), 1.0, f"exp-{len(weights)}", weights).arm for u in UNITS])
    n = len(UNITS)
    for i, w in enumerate(np.asarray(weights) / sum(weights)):
        sigma = math.sqrt(n * w * (1 - w))
        assert abs(np.sum(arms == i) - n * w) <= 3.29 * sigma, (i, w, np.sum(arms == i))


def test_layers_are_independent_and_one_layer_is_exclusive() -> None:
    a = np.array([bucket("layer-a", u) for u in UNITS]) // 2500  # quarters of each layer
    b = np.array([bucket("layer-b", u) for u in UNITS]) // 2500
    table = np.zeros((4, 4))
    np.add.at(table, (a, b), 1)
    assert chi2_contingency(table).pvalue > 0.001
    # two experiments of one layer own disjoint ranges: no unit is in both
    first = [assign(u, "layer-a", (0, 5000), 1.0, "x", [1, 1]).arm is not None for u in UNITS[:20_000]]
    second = [assign(u, "layer-a", (5000, BUCKETS), 1.0, "y", [1, 1]).arm is not None for u in UNITS[:20_000]]
    assert not any(f and s for f, s in zip(first, second, strict=True))
    assert 0.45 < np.mean(first) < 0.55 and 0.45 < np.mean(second) < 0.55


def test_a_coverage_ramp_only_adds_units_and_moves_none_between_arms() -> None:
    before = {u: assign(u, "layer", (2000, 8000), 0.1, "ramp", [1, 1]).arm for u in UNITS[:30_000]}
    after = {u: assign(u, "layer", (2000, 8000), 0.5, "ramp", [1, 1]).arm for u in UNITS[:30_000]}
    admitted_before = {u for u, arm in before.items() if arm is not None}
    admitted_after = {u for u, arm in after.items() if arm is not None}
    assert admitted_before <= admitted_after
    assert all(after[u] == before[u] for u in admitted_before)
    share = len(admitted_after) / 30_000
    assert abs(share - 0.5 * 0.6) < 0.02  # half of a 60% range
    assert abs(len(admitted_before) / 30_000 - 0.1 * 0.6) < 0.01


def test_bad_parameters_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="weights"):
        arm_bounds([])
    with pytest.raises(ValueError, match="weights"):
        arm_bounds([1, -1])
    with pytest.raises(ValueError, match="layer range"):
        covered_range(5000, 4000, 0.5)
    with pytest.raises(ValueError, match="coverage"):
        covered_range(0, 100, 1.5)
    with pytest.raises(ValueError, match="holdout"):
        in_holdout("u", "s", -0.1)
    assert arm_bounds([1, 2, 1]) == [2500, 7500, 10000]
