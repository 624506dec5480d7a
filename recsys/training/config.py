"""Training hyperparameters, loadable from a YAML/JSON file (`recsys train --config FILE`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from recsys.ranking.model import RankerParams
from recsys.retrieval.als import ALSParams
from recsys.retrieval.sources import DEFAULT_SOURCES
from recsys.settings import N_CANDIDATES


@dataclass
class TrainConfig:
    als: ALSParams = field(default_factory=ALSParams)
    ranker: RankerParams = field(default_factory=RankerParams)
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
    diversity_lambda: float = 0.8     # MMR λ used for the validation metrics
    ann_indexes: list[str] = field(default_factory=lambda: ["exact", "hnsw"])  # prebuilt FAISS indexes
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        raw = dict(raw)
        if "als" in raw:
            raw["als"] = ALSParams(**raw["als"])
        if "ranker" in raw:
            raw["ranker"] = RankerParams(**raw["ranker"])
        return cls(**raw)

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        text = Path(path).read_text()
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        return cls.from_dict(raw or {})
