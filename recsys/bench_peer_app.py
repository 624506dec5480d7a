"""The bench's peer: the same pipeline stages composed as a Ray Serve application, one deployment per
service (features, candidates, ranker), composed with deployment handles, behind Ray Serve's own HTTP
ingress. Each deployment wraps the very objects the in-process sources wrap (recsys/pipeline/local.py) and
the ranker runs recsys.pipeline.recommend, so the peer does the same work per request as our services and
only the composition differs. Run as a process of its own (`python -m recsys.bench_peer_app`) by
recsys/bench_peer.py: Ray Serve reads RAY_SERVE_THROUGHPUT_OPTIMIZED when it is imported.

Needs the `bench` extra (`ray[serve]`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import serve  # noqa: E402 (after the environment it reads)
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402

_ACTOR = {"num_cpus": 0}  # scheduling only: the 2 logical CPUs Ray is given must hold the 3 deployments


@serve.deployment(ray_actor_options=_ACTOR)
class Features:
    """feature_svc's part: the embedded storage loaded from the bundle."""

    def __init__(self, bundle: str):
        from recsys.feature_tables import FeatureTables
        from recsys.pipeline.local import LocalFeatureSource
        from recsys.storage.embedded import EmbeddedStorage

        storage = EmbeddedStorage()
        storage.load(FeatureTables.load(Path(bundle) / "features"))
        self.source = LocalFeatureSource(storage)

    async def get_user(self, *args, **kwargs):
        return await self.source.get_user(*args, **kwargs)

    async def get_items(self, *args, **kwargs):
        return await self.source.get_items(*args, **kwargs)


@serve.deployment(ray_actor_options=_ACTOR)
class Candidates:
    """candidate_svc's part: a CandidateGenerator over the bundle's retrieval artifacts, one per index kind."""

    def __init__(self, bundle: str, index: str):
        from recsys.bundle import read_metadata
        from recsys.pipeline.local import LocalCandidateSource
        from recsys.retrieval.artifacts import RetrievalArtifacts
        from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
        from recsys.settings import HISTORY_WINDOW

        gen = CandidateGenerator(RetrievalArtifacts.load(Path(bundle) / "retrieval"),
                                 GeneratorConfig(index=index, history_window=HISTORY_WINDOW))
        self.source = LocalCandidateSource(gen, read_metadata(Path(bundle)).version)

    async def retrieve(self, *args, **kwargs):
        return await self.source.retrieve(*args, **kwargs)


class _Via:
    """A FeatureSource/CandidateSource whose every method is a call through a deployment handle."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, name: str):
        method = getattr(self._handle, name)

        async def call(*args, **kwargs):
            return await method.remote(*args, **kwargs)

        return call


@serve.deployment(ray_actor_options=_ACTOR)
class Ranker:
    """ranker_svc's part and the ingress: POST {"user_id", "k", "n_candidates"} → the ranked item ids."""

    def __init__(self, bundle: str, features, candidates):
        from recsys.pipeline.model import ServingModel
        from recsys.pipeline.recommend import PipelineConfig

        self.model = ServingModel.load(Path(bundle))
        self.cfg = PipelineConfig().with_defaults(self.model.defaults)  # as ranker_svc's bundle_reranker
        self.features, self.candidates = _Via(features), _Via(candidates)

    async def __call__(self, request: Request) -> JSONResponse:
        from recsys.pipeline.recommend import recommend
        from recsys.pipeline.types import RecommendParams

        body = await request.json()
        cfg = self.cfg.override(n_candidates=body.get("n_candidates"))
        rec = await recommend(RecommendParams(user_id=body["user_id"], k=int(body.get("k", 10))), self.model,
                              self.features, self.candidates, cfg)
        return JSONResponse({"items": [i.item_id for i in rec.items], "model_version": rec.model_version})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("bundle")
    p.add_argument("--index", default="exact")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        bundle = str(Path(args.bundle).resolve())
        serve.run(Ranker.bind(bundle, Features.bind(bundle), Candidates.bind(bundle, args.index)),
                  name="recsys", route_prefix="/")
        print(json.dumps({"ready": args.port, "pid": os.getpid()}), flush=True)
        sys.stdin.read()  # serve until the bench closes our stdin
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
