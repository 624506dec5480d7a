"""The report's calibration on simulated A/A experiments, through the same analysis the CLI runs:
units arrive over 7 days with heterogeneous, position-biased clicking; the report is read after every
day; the false-positive rate at α = 0.05 must stay in [3%, 7%] and SRM false alarms at most 1%.
(The in-process fast path: units are built directly, the join from records is tested in test_analysis.)"""

from __future__ import annotations

import numpy as np

from recsys.experiments.analysis import DAY_MS, Collected, _Unit, analyse
from recsys.experiments.assignment import assign

DAYS, UNITS, EXPERIMENTS = 7, 600, 400
EXAMINE = 1.0 / np.arange(1, 11)  # position bias: the chance a user looks at position p


def _experiment(rng: np.random.Generator, salt: str, lift: float = 0.0) -> Collected:
    units: dict[str, _Unit] = {}
    for i in range(UNITS):
        user = f"u{i}"
        arm = ["control", "treatment"][assign(user, "layer", (0, 10_000), 1.0, salt, [1, 1]).arm]
        base = rng.gamma(2.0, 0.05)  # the user's own click propensity, before any treatment
        propensity = base * (1 + lift if arm == "treatment" else 1)
        first = int(rng.integers(0, DAYS)) * DAY_MS + int(rng.integers(0, DAY_MS))
        u = _Unit(arm, first, before=int(rng.poisson(base * 40)))  # pre-period activity: untouched by the arm
        for r in range(int(rng.integers(1, 5))):
            at = first + r * 3_600_000
            u.exposures.append(at)
            u.impressions += 10
            for p in np.flatnonzero(rng.random(10) < EXAMINE * propensity):
                u.clicks.append((at + 1000, float(1 / np.log2(p + 2))))
        units[user] = u
    last = max(t for u in units.values() for t in u.exposures)
    return Collected(units, min(u.first_ms for u in units.values()), last)


def test_a_a_read_every_day_keeps_its_false_positive_rate_and_srm_stays_quiet() -> None:
    rng = np.random.default_rng(2026)
    positives = srm = 0
    for k in range(EXPERIMENTS):
        rep = analyse("aa", _experiment(rng, f"aa-{k}"), ["control", "treatment"], [1, 1], "control",
                      planned_days=DAYS)
        positives += bool(rep.decisions["treatment"])
        srm += rep.srm.mismatch
    assert 0.03 <= positives / EXPERIMENTS <= 0.07, positives
    assert srm / EXPERIMENTS <= 0.01, srm


def test_a_real_lift_is_found() -> None:
    rng = np.random.default_rng(7)
    found = sum(bool(analyse("ab", _experiment(rng, f"ab-{k}", lift=0.5), ["control", "treatment"], [1, 1],
                             "control", planned_days=DAYS).decisions["treatment"]) for k in range(20))
    assert found >= 16
