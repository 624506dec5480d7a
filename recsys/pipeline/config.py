"""The pipeline's settings. One value per process (from the service settings), overridable per call: an
experiment arm passes its own `diversity_lambda`, `n_candidates` or source quotas."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from recsys.settings import AFFINITY_WINDOW, DIVERSITY_LAMBDA, FRESH_SHARE, HISTORY_WINDOW, MMR_POOL, N_CANDIDATES


@dataclass(frozen=True)
class PipelineConfig:
    n_candidates: int = N_CANDIDATES
    history_window: int = HISTORY_WINDOW      # most recent history items that drive retrieval and features
    affinity_window: int = AFFINITY_WINDOW    # history items whose features feed category/embedding affinity
    diversity_lambda: float = DIVERSITY_LAMBDA
    mmr_pool: int = MMR_POOL
    source_quotas: dict[str, float] = field(default_factory=dict)  # overrides of the bundle's quotas
    fresh_share: float = FRESH_SHARE          # share of each list reserved for items added since training

    def override(self, **changes) -> PipelineConfig:
        """This config with the given settings replaced; None leaves a setting as it is."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self

    def cache_key(self) -> tuple:
        """What the user-and-model part of the pipeline depends on (not λ, the pool, exclusions or k)."""
        return (self.n_candidates, self.history_window, self.affinity_window,
                tuple(sorted(self.source_quotas.items())))
