"""One experiment's analysis from what the stream recorded: exposures (with their assignments) joined
to the interactions that name their `request_id`, per unit, per arm, per day; then SRM, CUPED-adjusted
Welch comparisons against control, and the group-sequential decision (docs/experiments.md, "Report").

The unit is the assignment's (the user id, or the experiment's context key's value such as a session id;
exposures logged before units were recorded count per user). A click counts for the unit of the
exposure it names. Forced (QA) and shadow exposures are left out. A unit's pre-experiment activity, the
CUPED covariate, is its user's number of interactions before the unit's first exposure.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.events.codec import decode
from recsys.experiments.stats import Comparison, SampleRatio, compare, group_sequential, sample_ratio

CLICK_TYPES = frozenset({"click"})
CONVERSION_TYPES = frozenset({"purchase"})
DAY_MS = 86_400_000
METRICS = ("clicks_per_unit", "conversions_per_unit", "weighted_clicks_per_unit")
PRIMARY = "clicks_per_unit"


@dataclass
class _Unit:
    arm: str
    first_ms: int
    exposures: list[int] = field(default_factory=list)       # times
    impressions: int = 0
    clicks: list[tuple[int, float]] = field(default_factory=list)  # (time, position weight)
    conversions: list[int] = field(default_factory=list)
    before: int = 0  # interactions before the first exposure


@dataclass
class Collected:
    """The experiment's units, read from exposure and event records."""

    units: dict[str, _Unit]
    start_ms: int
    end_ms: int


def collect(experiment: str, exposure_records: Iterable[bytes], event_records: Iterable[bytes]) -> Collected:
    shown: dict[str, tuple[str, str, dict[str, int]]] = {}  # request id -> (user, unit, item -> position)
    units: dict[str, _Unit] = {}
    users: dict[str, set[str]] = {}  # user -> its units
    for data in exposure_records:
        rec = decode(data)
        exp = rec.exposure
        if exp.shadow:
            continue
        a = next((a for a in exp.assignments if a.experiment == experiment and not a.forced), None)
        if a is None:
            continue
        arm, key = a.arm, a.unit or exp.user_id
        at = rec.timestamp_ms or rec.accepted_at_ms  # the request's time (context.time) when it gave one
        unit = units.get(key)
        if unit is None:
            unit = units[key] = _Unit(arm, at)
            users.setdefault(exp.user_id, set()).add(key)
        elif unit.arm != arm:  # a unit seen in two arms: assignment broke; keep its first arm, count nothing new
            continue
        unit.first_ms = min(unit.first_ms, at)
        unit.exposures.append(at)
        unit.impressions += len(exp.items)
        shown[exp.request_id] = (exp.user_id, key, {it.item_id: it.position for it in exp.items})
    interactions: list[tuple[str, int, str, str, str]] = []
    for data in event_records:
        rec = decode(data)
        if rec.WhichOneof("kind") != "event" or rec.event.WhichOneof("kind") != "interaction":
            continue
        it = rec.event.interaction
        interactions.append((it.user_id, rec.timestamp_ms, it.type, it.request_id, it.item_id))
    for user, ts, kind, request_id, item in interactions:
        for key in users.get(user, ()):
            if ts < units[key].first_ms:
                units[key].before += 1
        hit = shown.get(request_id) if request_id else None
        if hit is None or hit[0] != user:
            continue
        unit = units[hit[1]]
        if kind in CLICK_TYPES:
            position = hit[2].get(item)
            unit.clicks.append((ts, 1.0 / math.log2(position + 2) if position is not None else 0.0))
        elif kind in CONVERSION_TYPES:
            unit.conversions.append(ts)
    times = [u.first_ms for u in units.values()]
    last = max((t for u in units.values() for t in u.exposures), default=0)
    return Collected(units, min(times, default=0), last)


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    units: int
    exposures: int
    impressions: int
    clicks: int
    conversions: int
    ctr: float
    conversion_rate: float  # conversions per unit
    clicks_per_unit: float


@dataclass(frozen=True)
class Report:
    experiment: str
    control: str
    arms: tuple[ArmSummary, ...]
    srm: SampleRatio
    comparisons: dict[str, dict[str, Comparison]]  # treatment arm -> metric -> comparison
    decisions: dict[str, bool | None]               # treatment arm -> significant on the primary (sequential)
    daily: dict[str, list[tuple[int, float, float, float]]]  # arm -> (day, lift, ci low, ci high) of the primary
    sizes: dict[str, list[int]]                     # arm -> units by day (cumulative)
    days: int
    verdict: str


def _values(units: Sequence[_Unit], metric: str, until_ms: int) -> np.ndarray:
    if metric == "clicks_per_unit":
        return np.array([sum(1 for t, _ in u.clicks if t < until_ms) for u in units], dtype=float)
    if metric == "conversions_per_unit":
        return np.array([sum(1 for t in u.conversions if t < until_ms) for u in units], dtype=float)
    return np.array([sum(w for t, w in u.clicks if t < until_ms) for u in units], dtype=float)


def analyse(experiment: str, collected: Collected, arms: Sequence[str], weights: Sequence[float], control: str,
            planned_days: int | None = None, alpha: float = 0.05) -> Report:
    by_arm: dict[str, list[_Unit]] = defaultdict(list)
    for u in collected.units.values():
        by_arm[u.arm].append(u)
    summaries = []
    for arm in arms:
        us = by_arm.get(arm, [])
        clicks = sum(len(u.clicks) for u in us)
        impressions = sum(u.impressions for u in us)
        summaries.append(ArmSummary(arm, len(us), sum(len(u.exposures) for u in us), impressions, clicks,
                                    sum(len(u.conversions) for u in us), clicks / impressions if impressions else 0.0,
                                    sum(len(u.conversions) for u in us) / len(us) if us else 0.0,
                                    clicks / len(us) if us else 0.0))
    srm = sample_ratio([s.units for s in summaries], weights)
    days = max(1, math.ceil((collected.end_ms - collected.start_ms + 1) / DAY_MS)) if collected.units else 0
    horizon = max(planned_days or days, 1)
    end = collected.end_ms + 1
    comparisons: dict[str, dict[str, Comparison]] = {}
    decisions: dict[str, bool | None] = {}
    daily: dict[str, list[tuple[int, float, float, float]]] = {}
    sizes = {arm: [sum(1 for u in by_arm.get(arm, []) if u.first_ms < collected.start_ms + d * DAY_MS)
                   for d in range(1, days + 1)] for arm in arms}
    ctrl = by_arm.get(control, [])
    for arm in arms:
        if arm == control:
            continue
        treat = by_arm.get(arm, [])
        if len(ctrl) < 2 or len(treat) < 2:
            decisions[arm] = None
            continue
        comparisons[arm] = {m: compare(_values(ctrl, m, end), _values(treat, m, end),
                                       covariate_control=np.array([u.before for u in ctrl], dtype=float),
                                       covariate_treatment=np.array([u.before for u in treat], dtype=float),
                                       alpha=alpha) for m in METRICS}
        zs, fractions, series = [], [], []
        for d in range(1, days + 1):
            cut = collected.start_ms + d * DAY_MS
            c = [u for u in ctrl if u.first_ms < cut]
            t = [u for u in treat if u.first_ms < cut]
            if len(c) < 2 or len(t) < 2:
                continue
            r = compare(_values(c, PRIMARY, cut), _values(t, PRIMARY, cut),
                        covariate_control=np.array([u.before for u in c], dtype=float),
                        covariate_treatment=np.array([u.before for u in t], dtype=float), alpha=alpha)
            zs.append(r.diff / r.se if r.se > 0 else 0.0)
            fractions.append(min(1.0, d / horizon))
            cm = r.control_mean or float("nan")
            series.append((d, r.diff / cm, r.ci_low / cm, r.ci_high / cm))
        daily[arm] = series
        # looks past the planned horizon are all the final look: keep the last of them (fraction 1)
        keep = [k for k, f in enumerate(fractions) if f < 1.0] + ([len(fractions) - 1] if fractions and
                                                                  fractions[-1] >= 1.0 else [])
        zs, fractions = [zs[k] for k in keep], [fractions[k] for k in keep]
        decisions[arm] = group_sequential(zs, fractions, alpha).significant if zs else None
    return Report(experiment, control, tuple(summaries), srm, comparisons, decisions, daily, sizes, days,
                  _verdict(srm, comparisons, decisions))


def _verdict(srm: SampleRatio, comparisons: dict[str, dict[str, Comparison]], decisions: dict[str, bool | None]) -> str:
    if srm.mismatch:
        return (f"sample-ratio mismatch (p = {srm.p_value:.2g}): the assignment or the logging is broken; "
                "do not trust the comparisons")
    parts = []
    for arm, significant in decisions.items():
        if significant is None:
            parts.append(f"{arm}: too few units yet")
            continue
        c = comparisons[arm][PRIMARY]
        if significant:
            word = "better" if c.diff > 0 else "worse"
            parts.append(f"{arm} is {word} than control on clicks per unit ({c.relative:+.1%}, "
                         f"p = {c.p_value:.2g}, sequential bound crossed)")
        else:
            parts.append(f"{arm}: no detectable difference on clicks per unit yet ({c.relative:+.1%}, "
                         f"p = {c.p_value:.2g})")
    return "; ".join(parts) or "no treatment arm"
