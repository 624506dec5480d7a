"""The pipeline's settings. One value per process (from the service settings), overridable per call: an
experiment arm passes its own `diversity_lambda`, `n_candidates`, source quotas or re-ranker, and a request
its own re-ranker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from recsys.ranking.rerankers import problem as rerank_problem
from recsys.settings import (
    AFFINITY_WINDOW,
    CALIBRATION_LAMBDA,
    CATEGORY_CAP,
    DIVERSITY_LAMBDA,
    FRESH_SHARE,
    HISTORY_WINDOW,
    LONGTAIL_BETA,
    MMR_POOL,
    N_CANDIDATES,
    RERANKER,
)

# What a bundle's `serving_defaults` may set: the re-ranker its training chose on validation (recsys train).
BUNDLE_DEFAULTS = ("reranker", "diversity_lambda", "calibration_lambda", "category_cap", "longtail_beta")
_RERANK_PARAM = {"calibrated": "calibration_lambda", "category_caps": "category_cap", "longtail": "longtail_beta"}


@dataclass(frozen=True)
class PipelineConfig:
    n_candidates: int = N_CANDIDATES
    history_window: int = HISTORY_WINDOW      # most recent history items that drive retrieval and features
    affinity_window: int = AFFINITY_WINDOW    # history items whose features feed category/embedding affinity
    diversity_lambda: float = DIVERSITY_LAMBDA
    mmr_pool: int = MMR_POOL
    source_quotas: dict[str, float] = field(default_factory=dict)  # overrides of the bundle's quotas
    fresh_share: float = FRESH_SHARE          # share of each list reserved for items added since training
    reranker: str = RERANKER                  # mmr, calibrated, category_caps or longtail (recsys/pipeline/rerank.py)
    calibration_lambda: float = CALIBRATION_LAMBDA
    category_cap: int = CATEGORY_CAP
    longtail_beta: float = LONGTAIL_BETA

    def __post_init__(self) -> None:
        if bad := rerank_problem(self.reranker, self.calibration_lambda, self.category_cap, self.longtail_beta):
            raise ValueError(f"{bad[0]} {bad[1]}")

    def override(self, **changes) -> PipelineConfig:
        """This config with the given settings replaced; None leaves a setting as it is."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self

    def with_defaults(self, defaults: Mapping[str, Any]) -> PipelineConfig:
        """These settings with a bundle's chosen re-ranker defaults in place (keys other than BUNDLE_DEFAULTS
        are ignored; an arm's or a request's override still applies on top)."""
        return self.override(**{k: v for k, v in defaults.items() if k in BUNDLE_DEFAULTS})

    def cache_key(self) -> tuple:
        """What the user-and-model part of the pipeline depends on (not λ, the pool, exclusions or k), and the
        re-ranker with its one parameter when it is not MMR (so MMR's keys are the ones from before there
        was a choice)."""
        key = (self.n_candidates, self.history_window, self.affinity_window,
               tuple(sorted(self.source_quotas.items())))
        if self.reranker != "mmr":
            key += (self.reranker, getattr(self, _RERANK_PARAM[self.reranker]))
        return key
