"""Which arms a request gets: the holdout, then each layer in file order (docs/experiments.md, "Routing").

A layer contributes at most one experiment (its ranges are disjoint). An experiment applies when it is
running, inside its start/end, its targeting matches, and the unit's layer bucket is in its covered
range; the arm comes from the experiment's salt. Arms of different layers must agree: the first layer
that sets a model version (or an override) decides it, and a later experiment whose arm disagrees is
left out for this unit (deterministically, so the unit stays out of it). A forced arm (QA) applies
whatever the buckets and targeting say and is labelled; forced units belong to no analysis.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recsys.experiments.assignment import assign, in_holdout
from recsys.experiments.config import Experiment, ExperimentsConfig


@dataclass(frozen=True)
class RequestFacts:
    """What routing reads from a request. `known` is whether the user has a history (None: not looked
    up; only experiments targeting known or new users need it, see `needs_known`)."""

    user_id: str
    surface: str = ""
    device: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    known: bool | None = None

    def unit(self, key: str) -> str:
        return self.user_id if key == "user_id" else self.extra.get(key, "")


@dataclass(frozen=True)
class Assigned:
    experiment: str
    arm: str
    forced: bool = False
    unit: str = ""  # the unit id hashed: the user id, or the experiment's context key's value


@dataclass(frozen=True)
class Route:
    assignments: tuple[Assigned, ...] = ()
    model_version: str | None = None        # None: the default version
    overrides: Mapping[str, Any] = field(default_factory=dict)
    holdout: bool = False


class UnknownArm(ValueError):
    """A forced arm that names no experiment or arm of the file."""


def _active(exp: Experiment, now: dt.datetime) -> bool:
    return (exp.status == "running" and (exp.start is None or exp.start <= now)
            and (exp.end is None or now < exp.end))


def _targeted(exp: Experiment, facts: RequestFacts) -> bool | None:
    """True/False, or None when it depends on `known` and that was not looked up."""
    t = exp.targeting
    if (t.surface and facts.surface not in t.surface) or (t.device and facts.device not in t.device):
        return False
    if any(facts.attributes.get(name) not in values for name, values in t.attributes.items()):
        return False
    if t.users == "all":
        return True
    if facts.known is None:
        return None
    return facts.known == (t.users == "known")


def _candidates(config: ExperimentsConfig, facts: RequestFacts, now: dt.datetime):
    """(experiment, arm index, targeted) of each layer's experiment that admits the unit."""
    for layer in config.layers:
        for exp in layer.experiments:
            unit = facts.unit(exp.unit)
            if not unit or not _active(exp, now):
                continue
            a = assign(unit, layer.salt, exp.buckets, exp.coverage, exp.salt, [arm.weight for arm in exp.arms])
            if a.arm is not None:
                yield exp, a.arm, _targeted(exp, facts)
                break  # the layer's ranges are disjoint: no other experiment of it can admit the unit


def needs_known(config: ExperimentsConfig, facts: RequestFacts, now: dt.datetime) -> bool:
    """Whether routing this request depends on whether the user is known (worth one feature lookup)."""
    if config.holdout and in_holdout(facts.user_id, config.holdout.salt, config.holdout.share):
        return False
    return any(targeted is None for _, _, targeted in _candidates(config, facts, now))


def route(config: ExperimentsConfig, facts: RequestFacts, now: dt.datetime | None = None,
          forced: Mapping[str, str] | None = None) -> Route:
    now = now or dt.datetime.now(dt.UTC)
    forced = dict(forced or {})
    by_name = {e.name: e for e in config.experiments()}
    chosen: list[tuple[Experiment, int, bool]] = []
    for name, arm_name in forced.items():
        exp = by_name.get(name)
        if exp is None:
            raise UnknownArm(f"force_arms: no experiment {name!r} (known: {', '.join(sorted(by_name)) or 'none'})")
        arms = [a.name for a in exp.arms]
        if arm_name not in arms:
            raise UnknownArm(f"force_arms[{name!r}]: no arm {arm_name!r} (arms: {', '.join(arms)})")
        chosen.append((exp, arms.index(arm_name), True))
    holdout = bool(config.holdout and in_holdout(facts.user_id, config.holdout.salt, config.holdout.share))
    if not holdout:
        chosen += [(exp, arm, False) for exp, arm, targeted in _candidates(config, facts, now)
                   if targeted and exp.name not in forced]
    version: str | None = None
    overrides: dict[str, Any] = {}
    assigned: list[Assigned] = []
    for exp, index, is_forced in chosen:
        arm = exp.arms[index]
        if version is not None and arm.model_version != version:
            continue
        if any(k in overrides and overrides[k] != v for k, v in arm.overrides.items()):
            continue
        version = arm.model_version
        overrides.update(arm.overrides)
        assigned.append(Assigned(exp.name, arm.name, is_forced, facts.unit(exp.unit) or facts.user_id))
    return Route(tuple(assigned), version, overrides, holdout)
