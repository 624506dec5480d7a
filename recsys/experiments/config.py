"""The experiments file (the `experiments.yaml` ConfigMap), parsed and validated: every problem is a
ConfigError naming the file, the line and the key. docs/experiments.md shows the format.

    holdout: {salt: holdout-2026, share: 0.05}
    shadow:
      - {name: v3-dark, model_version: v3, share: 0.1}   # also answers 10% of requests, never shown
    layers:
      - name: home
        salt: layer-home
        experiments:
          - name: ranker-v2
            salt: exp-ranker-v2
            status: running            # draft | running | stopped
            start: 2026-12-01T00:00:00Z
            end: 2027-01-01T00:00:00Z
            buckets: [0, 5000]         # this experiment's range of the layer's 10,000 buckets
            coverage: 0.1
            unit: user_id              # or a request context key, e.g. session_id
            targeting: {surface: [home], device: [ios, android], users: known, attributes: {country: [DE]}}
            arms:
              - {name: control, weight: 1, control: true, model_version: v1}
              - {name: treatment, weight: 1, model_version: v2, diversity_lambda: 0.7, cache: false}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.experiments.assignment import BUCKETS
from recsys.ranking.rerankers import problem as rerank_problem

STATUSES = ("draft", "running", "stopped")
USER_TARGETS = ("all", "known", "new")
ARM_OVERRIDES = {"diversity_lambda": float, "n_candidates": int, "cache": bool, "source_quotas": dict,
                 "reranker": str, "calibration_lambda": float, "category_cap": int, "longtail_beta": float}
_RERANK_KEYS = ("reranker", "calibration_lambda", "category_cap", "longtail_beta")


class ConfigError(ValueError):
    def __init__(self, file: str, line: int | None, key: str, reason: str):
        self.file, self.line, self.key, self.reason = file, line, key, reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {reason}")


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float
    model_version: str
    control: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)  # where it is declared, for later errors


@dataclass(frozen=True)
class Targeting:
    surface: tuple[str, ...] = ()  # empty: any
    device: tuple[str, ...] = ()
    users: str = "all"
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    status: str
    buckets: tuple[int, int]
    coverage: float
    arms: tuple[Arm, ...]
    unit: str = "user_id"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    targeting: Targeting = field(default_factory=Targeting)


@dataclass(frozen=True)
class Layer:
    name: str
    salt: str
    experiments: tuple[Experiment, ...]


@dataclass(frozen=True)
class Holdout:
    salt: str
    share: float


@dataclass(frozen=True)
class Shadow:
    """A version that also answers `share` of the requests in the background; never returned."""

    name: str
    model_version: str
    share: float
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ExperimentsConfig:
    layers: tuple[Layer, ...] = ()
    holdout: Holdout | None = None
    shadows: tuple[Shadow, ...] = ()

    def experiments(self) -> list[Experiment]:
        return [e for layer in self.layers for e in layer.experiments]

    def versions(self) -> set[str]:
        return {a.model_version for e in self.experiments() for a in e.arms} | {s.model_version for s in self.shadows}


class _Reader:
    """Walks the composed YAML so each error can name its line."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, node: yaml.Node | None, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, node.start_mark.line + 1 if node is not None else None, key, reason)

    def mapping(self, node: yaml.Node, key: str, allowed: set[str], required: set[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key, "must be a mapping")
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            name = str(k.value)
            if name not in allowed:
                raise self.fail(k, f"{key}.{name}" if key else name,
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
            if name in out:
                raise self.fail(k, f"{key}.{name}" if key else name, "given twice")
            out[name] = v
        for name in sorted(required - set(out)):
            raise self.fail(node, f"{key}.{name}" if key else name, "is required")
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, "must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node, key: str, kind: type) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key, f"must be a {kind.__name__}")
        try:
            value = yaml.safe_load(yaml.serialize(node))
        except (yaml.YAMLError, ValueError, OverflowError):  # e.g. a date 2026-01-81
            raise self.fail(node, key, f"not a valid value: {node.value!r}") from None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if kind is dt.datetime and isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(node, key, f"must be a {kind.__name__}, got {node.value!r}")
        if kind is str and not value:
            raise self.fail(node, key, "must be non-empty")
        return value

    def strings(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        return tuple(self.scalar(n, f"{key}[{i}]", str) for i, n in enumerate(self.sequence(node, key)))


def parse_config(text: str, file: str = "<experiments>") -> ExperimentsConfig:
    """Parse and validate; raises ConfigError (file, line, key, reason) on the first problem."""
    r = _Reader(file)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(file, mark.line + 1 if mark else None, "(file)", f"not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(file, None, "(file)", "nested too deeply") from None
    if root is None:
        return ExperimentsConfig()
    top = r.mapping(root, "", {"layers", "holdout", "experiments", "shadow"}, set())
    if "experiments" in top and r.sequence(top["experiments"], "experiments"):
        raise r.fail(top["experiments"], "experiments", "experiments belong to a layer: layers[].experiments")
    holdout = None
    if "holdout" in top:
        h = r.mapping(top["holdout"], "holdout", {"salt", "share"}, {"salt", "share"})
        share = r.scalar(h["share"], "holdout.share", float)
        if not 0.0 <= share < 1.0:
            raise r.fail(h["share"], "holdout.share", f"must be in [0, 1), got {share}")
        holdout = Holdout(r.scalar(h["salt"], "holdout.salt", str), share)
    layers: list[Layer] = []
    names: set[str] = set()
    salts: set[str] = set()
    for i, node in enumerate(r.sequence(top["layers"], "layers") if "layers" in top else []):
        key = f"layers[{i}]"
        m = r.mapping(node, key, {"name", "salt", "experiments"}, {"name", "salt"})
        layer_salt = r.scalar(m["salt"], f"{key}.salt", str)
        if layer_salt in salts:
            raise r.fail(m["salt"], f"{key}.salt",
                         f"{layer_salt!r} is another layer's salt: layers must be independent")
        salts.add(layer_salt)
        experiments = [_experiment(r, n, f"{key}.experiments[{j}]", names)
                       for j, n in enumerate(r.sequence(m["experiments"], f"{key}.experiments")
                                             if "experiments" in m else [])]
        _check_disjoint(r, m.get("experiments"), key, experiments)
        layers.append(Layer(r.scalar(m["name"], f"{key}.name", str), layer_salt, tuple(experiments)))
    shadows = [_shadow(r, n, f"shadow[{i}]") for i, n in enumerate(r.sequence(top["shadow"], "shadow")
                                                                   if "shadow" in top else [])]
    if len({x.name for x in shadows}) != len(shadows):
        raise r.fail(top["shadow"], "shadow", "shadow names must be unique")
    return ExperimentsConfig(tuple(layers), holdout, tuple(shadows))


def _shadow(r: _Reader, node: yaml.Node, key: str) -> Shadow:
    m = r.mapping(node, key, {"name", "model_version", "share"}, {"name", "model_version", "share"})
    share = r.scalar(m["share"], f"{key}.share", float)
    if not 0.0 < share <= 1.0:
        raise r.fail(m["share"], f"{key}.share", f"must be in (0, 1], got {share}")
    return Shadow(r.scalar(m["name"], f"{key}.name", str), r.scalar(m["model_version"], f"{key}.model_version", str),
                  share, node.start_mark.line + 1)


def _experiment(r: _Reader, node: yaml.Node, key: str, names: set[str]) -> Experiment:
    m = r.mapping(node, key, {"name", "salt", "status", "start", "end", "buckets", "coverage", "unit", "targeting",
                              "arms"}, {"name", "salt", "status", "buckets", "coverage", "arms"})
    name = r.scalar(m["name"], f"{key}.name", str)
    if name in names:
        raise r.fail(m["name"], f"{key}.name", f"experiment {name!r} is declared twice")
    names.add(name)
    status = r.scalar(m["status"], f"{key}.status", str)
    if status not in STATUSES:
        raise r.fail(m["status"], f"{key}.status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
    bounds = r.sequence(m["buckets"], f"{key}.buckets")
    if len(bounds) != 2:
        raise r.fail(m["buckets"], f"{key}.buckets", "must be [lo, hi]")
    lo, hi = (r.scalar(b, f"{key}.buckets", int) for b in bounds)
    if not 0 <= lo < hi <= BUCKETS:
        raise r.fail(m["buckets"], f"{key}.buckets", f"must satisfy 0 <= lo < hi <= {BUCKETS}, got [{lo}, {hi}]")
    coverage = r.scalar(m["coverage"], f"{key}.coverage", float)
    if not 0.0 <= coverage <= 1.0:
        raise r.fail(m["coverage"], f"{key}.coverage", f"must be in [0, 1], got {coverage}")
    start = r.scalar(m["start"], f"{key}.start", dt.datetime) if "start" in m else None
    end = r.scalar(m["end"], f"{key}.end", dt.datetime) if "end" in m else None
    if start and end and end <= start:
        raise r.fail(m["end"], f"{key}.end", "must be after start")
    arms = tuple(_arm(r, n, f"{key}.arms[{k}]") for k, n in enumerate(r.sequence(m["arms"], f"{key}.arms")))
    if len(arms) < 2:
        raise r.fail(m["arms"], f"{key}.arms", "an experiment needs at least two arms")
    if len({a.name for a in arms}) != len(arms):
        raise r.fail(m["arms"], f"{key}.arms", "arm names must be unique")
    if sum(a.control for a in arms) != 1:
        raise r.fail(m["arms"], f"{key}.arms", "exactly one arm must be the control (control: true)")
    if sum(a.weight for a in arms) <= 0:
        raise r.fail(m["arms"], f"{key}.arms", "the weights must have a positive sum")
    return Experiment(name, r.scalar(m["salt"], f"{key}.salt", str), status, (lo, hi), coverage, arms,
                      r.scalar(m["unit"], f"{key}.unit", str) if "unit" in m else "user_id", start, end,
                      _targeting(r, m["targeting"], f"{key}.targeting") if "targeting" in m else Targeting())


def _arm(r: _Reader, node: yaml.Node, key: str) -> Arm:
    m = r.mapping(node, key, {"name", "weight", "control", "model_version", *ARM_OVERRIDES},
                  {"name", "weight", "model_version"})
    weight = r.scalar(m["weight"], f"{key}.weight", float)
    if weight < 0:
        raise r.fail(m["weight"], f"{key}.weight", f"must be >= 0, got {weight}")
    overrides: dict[str, Any] = {}
    for name, kind in ARM_OVERRIDES.items():
        if name not in m:
            continue
        if kind is dict:
            q = r.mapping(m[name], f"{key}.{name}", {str(k.value) for k, _ in getattr(m[name], "value", [])}, set())
            overrides[name] = {s: r.scalar(v, f"{key}.{name}.{s}", float) for s, v in q.items()}
        else:
            overrides[name] = r.scalar(m[name], f"{key}.{name}", kind)
    lam = overrides.get("diversity_lambda")
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise r.fail(m["diversity_lambda"], f"{key}.diversity_lambda", f"must be in [0, 1], got {lam}")
    if overrides.get("n_candidates", 1) < 1:
        raise r.fail(m["n_candidates"], f"{key}.n_candidates", "must be >= 1")
    if bad := rerank_problem(**{f: overrides[f] for f in _RERANK_KEYS if f in overrides}):
        raise r.fail(m[bad[0]], f"{key}.{bad[0]}", bad[1])
    return Arm(r.scalar(m["name"], f"{key}.name", str), weight,
               r.scalar(m["model_version"], f"{key}.model_version", str),
               r.scalar(m["control"], f"{key}.control", bool) if "control" in m else False, overrides,
               node.start_mark.line + 1)


def _targeting(r: _Reader, node: yaml.Node, key: str) -> Targeting:
    m = r.mapping(node, key, {"surface", "device", "users", "attributes"}, set())
    users = r.scalar(m["users"], f"{key}.users", str) if "users" in m else "all"
    if users not in USER_TARGETS:
        raise r.fail(m["users"], f"{key}.users", f"must be one of {', '.join(USER_TARGETS)}, got {users!r}")
    attributes: dict[str, tuple[str, ...]] = {}
    if "attributes" in m:
        attrs = r.mapping(m["attributes"], f"{key}.attributes",
                          {str(k.value) for k, _ in getattr(m["attributes"], "value", [])}, set())
        attributes = {a: r.strings(v, f"{key}.attributes.{a}") for a, v in attrs.items()}
    return Targeting(r.strings(m["surface"], f"{key}.surface") if "surface" in m else (),
                     r.strings(m["device"], f"{key}.device") if "device" in m else (), users, attributes)


def _check_disjoint(r: _Reader, node: yaml.Node | None, key: str, experiments: list[Experiment]) -> None:
    ranges = sorted((e.buckets, e.name) for e in experiments)
    for (a, name_a), (b, name_b) in zip(ranges, ranges[1:], strict=False):
        if b[0] < a[1]:
            raise r.fail(node, f"{key}.experiments", f"{name_a!r} {list(a)} and {name_b!r} {list(b)} overlap: "
                                                     "experiments of one layer must own disjoint bucket ranges")


def load_config(path: str | Path, live_versions: set[str] | None = None) -> ExperimentsConfig:
    """Read and validate a file; with `live_versions`, an arm naming a version that is not live is an error."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, None, "(file)", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, None, "(file)", f"not UTF-8 text (byte {exc.start})") from None
    config = parse_config(text, file)
    if live_versions is not None:
        live = ", ".join(sorted(live_versions))
        for shadow in config.shadows:
            if shadow.model_version not in live_versions:
                raise ConfigError(file, shadow.line, f"shadow {shadow.name}.model_version",
                                  f"{shadow.model_version!r} is not live (live: {live})")
        for layer in config.layers:
            for exp in layer.experiments:
                for arm in exp.arms:
                    if exp.status == "running" and arm.model_version not in live_versions:
                        raise ConfigError(file, arm.line, f"{exp.name}.{arm.name}.model_version",
                                          f"{arm.model_version!r} is not live (live: {live})")
    return config
