"""The CandidateRetriever gRPC servicer around the shared CandidateGenerator."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import grpc
from grpc import aio

from candidate_svc.settings import CandidateSettings
from recsys.bundle import read_metadata
from recsys.metrics import BUNDLE_CREATED, CANDIDATES, MODEL_INFO
from recsys.pipeline.local import retrieve_list
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.rpc.server import Server
from recsys.v1 import candidates_pb2 as pb
from recsys.v1 import candidates_pb2_grpc as pb_grpc

log = logging.getLogger("candidate_svc")


def load_generator(bundle: Path, settings: CandidateSettings) -> tuple[CandidateGenerator, str, float]:
    meta = read_metadata(bundle)
    art = RetrievalArtifacts.load(bundle / "retrieval")
    gen = CandidateGenerator(art, GeneratorConfig(n=settings.default_n, index=settings.index))
    return gen, meta.version, meta.created


class CandidateServicer(pb_grpc.CandidateRetrieverServicer):
    def __init__(self, generator: CandidateGenerator, version: str, settings: CandidateSettings):
        self.generator = generator
        self.version = version
        self.settings = settings

    async def Retrieve(self, request: pb.RetrieveRequest, context: aio.ServicerContext) -> pb.RetrieveResponse:
        s = self.settings
        if request.n < 0 or request.n > s.max_n:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"n must be between 0 and {s.max_n}, got {request.n}")
        if len(request.history) > s.max_history:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"history: at most {s.max_history} items, got {len(request.history)}")
        if len(request.exclude_item_ids) > s.max_n * 10:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "exclude_item_ids: too many ids")
        cands = retrieve_list(self.generator, self.version, list(request.history), list(request.exclude_item_ids),
                              request.n or s.default_n, dict(request.user_attributes), request.include_seen)
        resp = pb.RetrieveResponse(score_names=cands.score_names, model_version=self.version)
        counts: dict[str, int] = {}
        for item_id, scores, sources in zip(cands.item_ids, cands.scores.tolist(), cands.sources, strict=True):
            resp.candidates.add(item_id=item_id, scores=scores, sources=sources)
            for src in sources:
                counts[src] = counts.get(src, 0) + 1
        for src, c in counts.items():
            CANDIDATES.labels(src).inc(c)
        return resp


async def serve(settings: CandidateSettings, ready: asyncio.Event | None = None) -> None:
    if not settings.bundle:
        raise SystemExit("candidate_svc: --bundle (or RECSYS_BUNDLE) is required")
    gen, version, created = await asyncio.to_thread(load_generator, Path(settings.bundle), settings)
    MODEL_INFO.labels("candidate_svc", version, "retrieval").set(1)
    BUNDLE_CREATED.labels("candidate_svc", version).set(created)
    log.info("bundle %s: %d items, %s index", version, gen.n_items, settings.index)
    gc.freeze()  # the loaded model is long-lived: keep the collector from rescanning it (p99)
    server = Server(settings.host, settings.port, settings.metrics_port)
    server.add(pb_grpc.add_CandidateRetrieverServicer_to_server, CandidateServicer(gen, version, settings),
               "recsys.v1.CandidateRetriever")
    await server.start()
    if ready is not None:
        ready.set()
    await server.serve()
