"""Training hyperparameters, loadable from a YAML/JSON file (`recsys train --config FILE`)."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from recsys.ranking.model import RankerParams
from recsys.retrieval.als import ALSParams
from recsys.retrieval.ncf import NCFParams
from recsys.retrieval.sources import DEFAULT_SOURCES
from recsys.settings import N_CANDIDATES

# The searches `recsys train` runs on its validation split (recsys/training/select.py), cheapest first, and the
# options each one chooses. An option a config file sets is not searched (it lands in `fixed`).
SEARCHES: dict[str, tuple[str, ...]] = {
    "ease": ("ease_reg",),
    "neighbors": ("neighbors",),
    "als": ("als.factors", "als.regularization"),
    "quotas": ("source_quotas",),
    "trees": ("ranker.num_leaves", "ranker.min_data_in_leaf"),
    "reranker": ("diversity_lambda",),
}
SEARCHED = {option for options in SEARCHES.values() for option in options}
GRID_SIZES = ("auto", "full", "small")
AUTO_SMALL_ABOVE = 500_000  # select_grid "auto": the small grids above this many interactions (bounded time)


@dataclass
class TrainConfig:
    als: ALSParams = field(default_factory=ALSParams)
    ranker: RankerParams = field(default_factory=RankerParams)
    ncf: NCFParams = field(default_factory=NCFParams)  # NeuMF, when `sources` names "ncf" (needs the ncf extra)
    ease_reg: float = 400.0           # EASE L2 weight (item-to-item source on catalogs up to 12k items)
    neighbors: int = 1000             # item-to-item neighbours kept per item (EASE: 400 loses ~0.002 nDCG@10)
    sequence_neighbors: int = 200     # time-adjacent neighbours kept per item (0 = no sequence source)
    sequence_window: int = 1          # how many positions apart in a user's history count as adjacent
    cold_threshold: int = 5           # items with fewer interactions are "cold" (content source)
    segment_top: int = 300            # items kept per user segment (attribute=value)
    # Candidate sources, in merge order (names registered in recsys/retrieval/sources), and overrides of
    # their default shares of the candidate budget.
    sources: list[str] = field(default_factory=lambda: list(DEFAULT_SOURCES))
    source_quotas: dict[str, float] = field(default_factory=dict)
    n_candidates: int = N_CANDIDATES  # candidates per user, as served
    label_fraction: float = 0.2       # share of each user's interactions held out as ranker labels
    ranker_folds: int = 3             # history/label splits the ranker's lists come from (more lists, less noise)
    valid_fraction: float = 0.15      # share of ranker users used for early stopping and metrics
    max_ranker_users: int = 6000      # cap on users that produce ranker training lists
    # Cap on validation users (the searches, early stopping, metrics): a random sample above it, recorded in
    # the bundle (params.user_sample). Only large data sets reach it (0.15 x 13,334 users).
    max_valid_users: int = 2000
    diversity_lambda: float = 0.8     # MMR λ used for the validation metrics
    ann_indexes: list[str] = field(default_factory=lambda: ["exact", "hnsw"])  # prebuilt FAISS indexes
    seed: int = 42
    # Per-training-set selection (recsys/training/select.py): which searches run ([] = the values above as
    # they are), their grid size ("small": fewer candidates, for tests and demos; "auto": full up to
    # AUTO_SMALL_ABOVE interactions, small above), and the searched options held at their configured value
    # (from_dict adds every searched option a config file sets).
    select: list[str] = field(default_factory=lambda: list(SEARCHES))
    select_grid: str = "auto"
    fixed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if unknown := [s for s in self.select if s not in SEARCHES]:
            raise ValueError(f"select: unknown search(es) {', '.join(map(repr, unknown))} "
                             f"(valid: {', '.join(SEARCHES)})")
        if self.max_valid_users < 1:
            raise ValueError(f"max_valid_users must be at least 1, got {self.max_valid_users}")
        if self.select_grid not in GRID_SIZES:
            raise ValueError(f"select_grid must be one of {', '.join(GRID_SIZES)}, got {self.select_grid!r}")
        if unknown := [o for o in self.fixed if o not in SEARCHED]:
            raise ValueError(f"fixed: {', '.join(map(repr, unknown))} are not searched options "
                             f"(searched: {', '.join(sorted(SEARCHED))})")

    def grid_size(self, n_interactions: int) -> str:
        """The grid size the searches use for a training set of this many interactions."""
        if self.select_grid != "auto":
            return self.select_grid
        return "small" if n_interactions > AUTO_SMALL_ABOVE else "full"

    def searched(self, search: str) -> tuple[str, ...]:
        """The options of `search` this run chooses (empty: the search is off or all its options are fixed)."""
        return tuple(o for o in SEARCHES[search] if o not in self.fixed) if search in self.select else ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> TrainConfig:
        """Options checked by name and type (TrainConfigError naming the option); nested als/ranker too.
        Searched options the mapping sets are added to `fixed`: what a user writes wins over the search."""
        cfg = _typed(cls, raw, "")
        assert isinstance(raw, dict)  # _typed raised otherwise
        given = {str(k) for k in raw} | {f"{k}.{n}" for k, v in raw.items() if isinstance(v, dict) for n in v}
        cfg.fixed = sorted(set(cfg.fixed) | (given & SEARCHED))
        return cfg

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """A YAML file (JSON when it ends in .json); every problem is a TrainConfigError naming the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except OSError as exc:
            raise TrainConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise TrainConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise TrainConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise TrainConfigError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
        except (RecursionError, ValueError) as exc:  # nesting too deep for the parser; NaN-like literals
            raise TrainConfigError(f"{path}: cannot parse: {type(exc).__name__}") from None
        try:
            return cls.from_dict(raw or {})
        except TrainConfigError as exc:
            raise TrainConfigError(f"{path}: {exc}") from None


class TrainConfigError(ValueError):
    """A training config that cannot be used: names the file (from_file) and the option."""


def _typed(cls: type, raw: object, where: str):
    """An instance of the dataclass `cls` from a mapping of its field names to values of their types."""
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{where or 'the config'} must be a mapping of options, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(repr(k) if not isinstance(k, str) else k for k in raw if k not in names)
    if unknown:
        raise TrainConfigError(f"unknown training option(s) {', '.join(unknown)}"
                               f"{' in ' + where if where else ''} (valid: {', '.join(names)})")
    values = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else key
        kind = hints[key]
        values[key] = _typed(kind, value, name) if is_dataclass(kind) else _value(kind, value, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"{where or 'the config'}: {exc}") from None


def _value(kind: object, value: object, name: str) -> object:
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise TrainConfigError(f"{name} must be a list, got {value!r:.80}")
        (inner,) = typing.get_args(kind)
        return [_value(inner, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainConfigError(f"{name} must be a mapping, got {value!r:.80}")
        key_kind, inner = typing.get_args(kind)
        return {_value(key_kind, k, f"{name} key"): _value(inner, v, f"{name}[{k!r}]") for k, v in value.items()}
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str)}.get(kind)  # type: ignore[call-overload]
    if ok is not None and not ok(value):
        what = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}[kind]
        raise TrainConfigError(f"{name} must be {what}, got {value!r:.80}")
    return float(value) if kind is float else value  # type: ignore[arg-type]
