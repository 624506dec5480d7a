"""Routing a request: holdout, layers in order, targeting, dates, forced arms, conflicting layers."""

from __future__ import annotations

import datetime as dt

import pytest

from recsys.experiments.config import parse_config
from recsys.experiments.router import RequestFacts, UnknownArm, needs_known, route

NOW = dt.datetime(2026, 12, 10, tzinfo=dt.UTC)
FILE = """\
holdout: {salt: ho, share: 0.1}
layers:
  - name: models
    salt: layer-models
    experiments:
      - name: ranker
        salt: exp-ranker
        status: running
        buckets: [0, 10000]
        coverage: 1
        targeting: {surface: [home]}
        arms:
          - {name: control, weight: 1, control: true, model_version: v1}
          - {name: challenger, weight: 1, model_version: v2}
  - name: tuning
    salt: layer-tuning
    experiments:
      - name: lambda
        salt: exp-lambda
        status: running
        buckets: [0, 8000]
        coverage: 1
        arms:
          - {name: control, weight: 1, control: true, model_version: v1}
          - {name: diverse, weight: 1, model_version: v1, diversity_lambda: 0.6}
      - name: later
        salt: exp-later
        status: running
        start: 2027-01-01T00:00:00Z
        buckets: [8000, 10000]
        coverage: 1
        arms:
          - {name: a, weight: 1, control: true, model_version: v1}
          - {name: b, weight: 1, model_version: v1}
"""


def _cfg(text: str = FILE):
    return parse_config(text)


USERS = [f"user-{i}" for i in range(2000)]


def test_held_out_units_get_the_champion_and_the_others_their_arms() -> None:
    cfg = _cfg()
    routes = {u: route(cfg, RequestFacts(u, surface="home"), NOW) for u in USERS}
    held = [u for u, r in routes.items() if r.holdout]
    assert 0.07 < len(held) / len(USERS) < 0.13
    assert all(not routes[u].assignments and routes[u].model_version is None for u in held)
    enrolled = [r for r in routes.values() if not r.holdout]
    # every unit outside the holdout is in `ranker`; `lambda` only when its arm agrees on the version
    assert all(r.assignments[0].experiment == "ranker" for r in enrolled)
    for r in enrolled:
        arms = {a.experiment: a.arm for a in r.assignments}
        assert r.model_version == ("v2" if arms["ranker"] == "challenger" else "v1")
        assert "lambda" not in arms or r.model_version == "v1"
        if arms.get("lambda") == "diverse":
            assert r.overrides == {"diversity_lambda": 0.6}
    again = {u: route(cfg, RequestFacts(u, surface="home"), NOW) for u in USERS}
    assert again == routes  # sticky


def test_targeting_and_dates_decide_who_enters() -> None:
    cfg = _cfg()
    not_home = [route(cfg, RequestFacts(u, surface="search"), NOW) for u in USERS[:300]]
    assert all("ranker" not in {a.experiment for a in r.assignments} for r in not_home)
    assert all(a.experiment != "later" for u in USERS for a in route(cfg, RequestFacts(u), NOW).assignments)
    late = dt.datetime(2027, 2, 1, tzinfo=dt.UTC)
    in_later = [u for u in USERS if "later" in {a.experiment for a in route(cfg, RequestFacts(u), late).assignments}]
    assert 0.14 < len(in_later) / len(USERS) < 0.22  # its 20% of the layer, minus the 10% holdout


def test_known_or_new_users_need_a_lookup_only_when_it_matters() -> None:
    cfg = _cfg(FILE.replace("targeting: {surface: [home]}", "targeting: {users: new}"))
    facts = [RequestFacts(u) for u in USERS[:200]]
    asking = [f for f in facts if needs_known(cfg, f, NOW)]
    assert asking and len(asking) < len(facts)  # the held-out units need no lookup
    for f in asking:
        new = route(cfg, RequestFacts(f.user_id, known=False), NOW)
        known = route(cfg, RequestFacts(f.user_id, known=True), NOW)
        assert "ranker" in {a.experiment for a in new.assignments}
        assert "ranker" not in {a.experiment for a in known.assignments}


def test_a_context_key_can_be_the_unit() -> None:
    cfg = _cfg(FILE.replace("        salt: exp-lambda\n", "        salt: exp-lambda\n        unit: session_id\n"))
    # a unit in ranker's control arm (v1), so lambda's arms never disagree with it on the version
    user = next(u for u in USERS if route(cfg, RequestFacts(u, surface="home"), NOW).model_version == "v1")
    without = route(cfg, RequestFacts(user, surface="home"), NOW)
    assert "lambda" not in {a.experiment for a in without.assignments}  # no session: not enrolled
    lams = [route(cfg, RequestFacts(user, surface="home", extra={"session_id": f"s{i}"}), NOW).overrides.get(
        "diversity_lambda") for i in range(400)]
    assert set(lams) == {None, 0.6}  # one user, many sessions: both arms
    assert 0.25 < lams.count(0.6) / len(lams) < 0.55  # half of lambda's 80% of the layer
    units = {a.experiment: a.unit for a in route(cfg, RequestFacts(user, surface="home", extra={"session_id": "s7"}),
                                                 NOW).assignments}
    assert units["ranker"] == user and units.get("lambda", "s7") == "s7"  # each assignment names its unit


def test_a_forced_arm_is_labelled_and_unknown_ones_are_refused() -> None:
    cfg = _cfg()
    held = next(u for u in USERS if route(cfg, RequestFacts(u), NOW).holdout)
    r = route(cfg, RequestFacts(held, surface="search"), NOW, forced={"ranker": "challenger"})
    assert [(a.experiment, a.arm, a.forced) for a in r.assignments] == [("ranker", "challenger", True)]
    assert r.model_version == "v2"
    with pytest.raises(UnknownArm, match="no experiment 'nope'"):
        route(cfg, RequestFacts("u"), NOW, forced={"nope": "a"})
    with pytest.raises(UnknownArm, match="no arm 'zzz'"):
        route(cfg, RequestFacts("u"), NOW, forced={"ranker": "zzz"})


def test_draft_and_stopped_experiments_enrol_nobody() -> None:
    cfg = _cfg(FILE.replace("status: running", "status: stopped"))
    assert all(not route(cfg, RequestFacts(u, surface="home"), NOW).assignments for u in USERS[:300])
