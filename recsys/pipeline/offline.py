"""The serving stack in one process: the same storage, generator and pipeline code, minus gRPC.

Training uses it for validation metrics and `recsys eval` for test metrics, so offline numbers measure
exactly what the services would return.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from recsys.feature_tables import FeatureTables
from recsys.pipeline.local import LocalCandidateSource, LocalFeatureSource, prefetch_users, prefetched
from recsys.pipeline.model import ServingModel
from recsys.pipeline.recommend import PipelineConfig, recommend
from recsys.pipeline.types import Recommendation, RecommendParams
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.storage.embedded import EmbeddedStorage


class OfflineStack:
    def __init__(self, art: RetrievalArtifacts, tables: FeatureTables, model: ServingModel,
                 pipeline: PipelineConfig | None = None, generator: GeneratorConfig | None = None,
                 shared: tuple[EmbeddedStorage, CandidateGenerator] | None = None):
        """`shared`: a storage already loaded with `tables` and a generator already started on `art` with
        this stack's generator config, used instead of loading and starting copies (training's folds: at
        catalog scale each copy is an index and a feature store of the whole catalog)."""
        self.pipeline = pipeline or PipelineConfig()
        gen_cfg = generator or GeneratorConfig(n=self.pipeline.n_candidates,
                                               history_window=self.pipeline.history_window)
        if shared is not None:
            self.storage, self.generator = shared
            if self.generator.config != gen_cfg:
                raise ValueError(f"shared generator has config {self.generator.config}, this stack needs {gen_cfg}")
        else:
            self.storage = EmbeddedStorage()
            self.storage.load(tables)
            self.generator = CandidateGenerator(art, gen_cfg)
        self.features = LocalFeatureSource(self.storage)
        self.candidates = LocalCandidateSource(self.generator, model.version)
        self.model = model

    @classmethod
    def from_bundle(cls, bundle: Path, pipeline: PipelineConfig | None = None,
                    bundle_defaults: bool = True) -> OfflineStack:
        """The stack serving would run for this bundle: with `bundle_defaults`, the re-ranker the bundle chose
        on validation replaces `pipeline`'s (as ranker_svc's `bundle_reranker` setting does)."""
        bundle = Path(bundle)
        model = ServingModel.load(bundle)
        pipeline = pipeline or PipelineConfig()
        return cls(RetrievalArtifacts.load(bundle / "retrieval"), FeatureTables.load(bundle / "features"), model,
                   pipeline.with_defaults(model.defaults) if bundle_defaults else pipeline)

    def recommend_many(self, user_ids: Iterable[str], k: int, diversity_lambda: float | None = None,
                       progress=None) -> dict[str, Recommendation]:
        """Recommendations for many users, through the serving pipeline."""

        async def run() -> dict[str, Recommendation]:
            out = {}
            for u in prefetched(self.storage, self.generator, list(user_ids), self.pipeline):
                params = RecommendParams(user_id=u, k=k, diversity_lambda=diversity_lambda)
                out[u] = await recommend(params, self.model, self.features, self.candidates, self.pipeline)
                if progress is not None:
                    progress()
            return out

        return asyncio.run(run())

    def prefetch(self, user_ids: Iterable[str]) -> None:
        """Batch the retrieval searches of these users' coming requests in one call (CandidateGenerator.prefetch):
        for callers that run the pipeline per user themselves."""
        prefetch_users(self.storage, self.generator, list(user_ids), self.pipeline)

    def with_lambda(self, lam: float) -> OfflineStack:
        """The same stack with another default MMR λ (shares all loaded state)."""
        return self.with_pipeline(diversity_lambda=lam)

    def with_pipeline(self, **changes) -> OfflineStack:
        """The same stack with some pipeline settings replaced (shares all loaded state)."""
        other = object.__new__(OfflineStack)
        other.__dict__.update(self.__dict__)
        other.pipeline = replace(self.pipeline, **changes)
        return other
