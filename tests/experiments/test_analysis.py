"""The report's analysis on records built here, where the truth is known: clicks are joined to their
exposure by request id, forced and shadow exposures are left out, a better arm is found better, an
arm that loses exposures is flagged as a sample-ratio mismatch, and the CLI writes the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from recsys.events.codec import EXPOSURE_TOPIC, encode_event, encode_exposure
from recsys.experiments.analysis import analyse, collect
from recsys.experiments.assignment import assign
from recsys.stream import open_stream, topic_url
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb

DAY = 86_400_000
T0 = 1_764_547_200_000  # 2025-12-01


def _exposure(user: str, arm: str, request_id: str, at: int, *, forced: bool = False, shadow: bool = False) -> bytes:
    e = spb.Exposure(request_id=request_id, user_id=user, model_version="v", shadow=shadow,
                     items=[spb.ExposedItem(item_id=f"i{p}", position=p) for p in range(10)],
                     assignments=[rpb.Assignment(experiment="exp", arm=arm, forced=forced)])
    return encode_exposure(e, at)


def _event(user: str, kind: str, at: int, request_id: str = "", item: str = "i0") -> bytes:
    ev = fpb.FeedbackEvent(event_id=f"{user}-{at}-{kind}-{item}",
                           interaction=fpb.Interaction(user_id=user, item_id=item, type=kind, request_id=request_id))
    ev.timestamp.FromMilliseconds(at)
    return encode_event(ev, at)


def _population(n: int, click_p: dict[str, float], days: int = 7, drop: dict[str, float] | None = None,
                seed: int = 0, per_unit: int = 3) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    exposures, events = [], []
    for i in range(n):
        user = f"u{i}"
        arm = ["control", "treatment"][assign(user, "L", (0, 10_000), 1.0, "E", [1, 1]).arm]
        activity = rng.poisson(3)
        for k in range(activity):  # pre-experiment interactions: the CUPED covariate
            events.append(_event(user, "view", T0 - (k + 1) * 3_600_000))
        first = T0 + int(rng.integers(0, days)) * DAY + 1000
        for r in range(per_unit):
            rid = f"{user}-r{r}"
            at = first + r * 60_000
            if drop and rng.random() < drop.get(arm, 0.0):
                continue  # the exposure was lost
            exposures.append(_exposure(user, arm, rid, at))
            p = click_p[arm] * (1 + 0.3 * activity)
            if rng.random() < min(p, 0.95):
                events.append(_event(user, "click", at + 5000, rid, f"i{int(rng.integers(0, 10))}"))
    return exposures, events


def test_clicks_join_their_exposure_and_forced_or_shadow_ones_are_left_out() -> None:
    exposures = [_exposure("a", "control", "r1", T0), _exposure("b", "treatment", "r2", T0),
                 _exposure("c", "treatment", "r3", T0, forced=True), _exposure("d", "control", "r4", T0, shadow=True)]
    events = [_event("a", "click", T0 + 10, "r1", "i3"), _event("a", "click", T0 + 20),  # no request id: not joined
              _event("b", "purchase", T0 + 30, "r2"), _event("b", "click", T0 + 40, "r1"),  # another user's request
              _event("a", "view", T0 - 10)]
    got = collect("exp", exposures, events)
    assert set(got.units) == {"a", "b"}
    a, b = got.units["a"], got.units["b"]
    assert (a.arm, len(a.clicks), a.before, a.impressions) == ("control", 1, 1, 10)
    assert a.clicks[0][1] == 1 / np.log2(3 + 2)  # position-weighted
    assert (b.arm, len(b.clicks), len(b.conversions)) == ("treatment", 0, 1)


def test_a_better_arm_is_found_better_and_an_equal_one_is_not() -> None:
    better = analyse("exp", collect("exp", *_population(3000, {"control": 0.10, "treatment": 0.16})),
                     ["control", "treatment"], [1, 1], "control", planned_days=7)
    assert better.decisions["treatment"] is True and "treatment is better" in better.verdict
    c = better.comparisons["treatment"]["clicks_per_unit"]
    assert c.p_value < 0.01 and c.variance_reduction > 0.05 and c.ci_low > 0
    assert not better.srm.mismatch and len(better.daily["treatment"]) == 7
    same = analyse("exp", collect("exp", *_population(3000, {"control": 0.10, "treatment": 0.10}, seed=1)),
                   ["control", "treatment"], [1, 1], "control", planned_days=7)
    assert same.decisions["treatment"] is False and "no detectable difference" in same.verdict


def test_a_context_key_unit_is_analysed_per_unit_and_clicks_count_for_the_exposure_they_name() -> None:
    def exposure(user: str, unit: str, arm: str, rid: str, at: int) -> bytes:
        e = spb.Exposure(request_id=rid, user_id=user, items=[spb.ExposedItem(item_id="i0", position=0)],
                         assignments=[rpb.Assignment(experiment="exp", arm=arm, unit=unit)])
        return encode_exposure(e, at)

    exposures = [exposure("u1", "s1", "control", "r1", T0), exposure("u1", "s2", "treatment", "r2", T0 + 10),
                 exposure("u2", "s3", "control", "r3", T0 + 20)]
    events = [_event("u1", "view", T0 - 5), _event("u1", "click", T0 + 30, "r2"), _event("u1", "click", T0 + 40, "r1"),
              _event("u1", "click", T0 + 50, "r3")]  # r3 is another user's: not joined
    got = collect("exp", exposures, events).units
    assert sorted(got) == ["s1", "s2", "s3"]
    assert (got["s1"].arm, len(got["s1"].clicks)) == ("control", 1)
    assert (got["s2"].arm, len(got["s2"].clicks)) == ("treatment", 1)
    assert got["s3"].clicks == [] and got["s1"].before == 1 and got["s2"].before == 1  # the user's history


def test_an_arm_that_loses_five_percent_of_its_exposures_is_flagged() -> None:
    # one exposure per unit, 5% of the treatment's lost: ~30,000 against ~28,500 units
    lossy = _population(60_000, {"control": 0.1, "treatment": 0.1}, drop={"treatment": 0.05}, seed=2, per_unit=1)
    rep = analyse("exp", collect("exp", *lossy), ["control", "treatment"], [1, 1], "control")
    assert rep.srm.mismatch and rep.verdict.startswith("sample-ratio mismatch")
    intact = _population(60_000, {"control": 0.1, "treatment": 0.1}, seed=3, per_unit=1)
    assert not analyse("exp", collect("exp", *intact), ["control", "treatment"], [1, 1], "control").srm.mismatch


def test_the_cli_reads_the_stream_and_writes_the_report(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'events'}"
    exposures, events = _population(1500, {"control": 0.1, "treatment": 0.2})
    stream, exp_stream = open_stream(url), open_stream(topic_url(url, EXPOSURE_TOPIC))
    stream.append([(None, e) for e in events])
    exp_stream.append([(None, e) for e in exposures])
    stream.close()
    exp_stream.close()
    out = subprocess.run([sys.executable, "-m", "recsys.cli", "experiments", "report", "--experiment", "exp",
                          "--stream", url, "--days", "7", "--report", str(tmp_path / "rep"), "--json",
                          str(tmp_path / "rep.json")], capture_output=True, text=True, timeout=120,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verdict: treatment is better" in out.stdout
    data = json.loads((tmp_path / "rep.json").read_text())
    assert data["decisions"] == {"treatment": True} and data["srm"]["mismatch"] is False
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "![lift](lift.png)" in md and (tmp_path / "rep" / "lift.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "sizes.png").exists()
