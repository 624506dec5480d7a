"""The CandidateRetriever gRPC servicer around the shared CandidateGenerator."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import grpc
import numpy as np
from grpc import aio

from candidate_svc.settings import CandidateSettings
from recsys.bundle import verify_bundle
from recsys.metrics import CANDIDATES, mark_serving
from recsys.pipeline.local import retrieve_list
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.rpc.reload import follow_champion, resolve_bundle, wait_for_champion
from recsys.rpc.server import Server
from recsys.v1 import candidates_pb2 as pb
from recsys.v1 import candidates_pb2_grpc as pb_grpc

log = logging.getLogger("candidate_svc")


def load_generator(bundle: Path, settings: CandidateSettings) -> tuple[CandidateGenerator, str, float]:
    meta = verify_bundle(bundle)
    art = RetrievalArtifacts.load(bundle / "retrieval")
    gen = CandidateGenerator(art, GeneratorConfig(n=settings.default_n, index=settings.index))
    return gen, meta.version, meta.created


class CandidateServicer(pb_grpc.CandidateRetrieverServicer):
    def __init__(self, settings: CandidateSettings):
        self.current: tuple[CandidateGenerator, str] | None = None  # swapped as one reference on reload
        self.settings = settings

    def swap(self, version: str, loaded: tuple[CandidateGenerator, str, float]) -> None:
        gen, _, created = loaded
        self.current = (gen, version)
        mark_serving("candidate_svc", version, "retrieval", created)

    async def Retrieve(self, request: pb.RetrieveRequest, context: aio.ServicerContext) -> pb.RetrieveResponse:
        s = self.settings
        if request.n < 0 or request.n > s.max_n:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"n must be between 0 and {s.max_n}, got {request.n}")
        if len(request.history) > s.max_history:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"history: at most {s.max_history} items, got {len(request.history)}")
        if len(request.exclude_item_ids) > s.max_exclude:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"exclude_item_ids: at most {s.max_exclude} ids, got {len(request.exclude_item_ids)}")
        current = self.current
        if current is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "candidate_svc has no model loaded yet")
        generator, version = current
        cands = retrieve_list(generator, version, list(request.history), list(request.exclude_item_ids),
                              request.n or s.default_n, dict(request.user_attributes), request.include_seen)
        resp = pb.RetrieveResponse(item_ids=cands.item_ids, score_names=cands.score_names,
                                   scores=cands.scores.ravel().tolist(), source_names=cands.source_vocab,
                                   source_masks=cands.source_masks.tolist(), model_version=version)
        masks = cands.source_masks.astype(np.int64)
        for i, src in enumerate(cands.source_vocab):
            count = int(((masks >> i) & 1).sum())
            if count:
                CANDIDATES.labels(src).inc(count)
        return resp


async def serve(settings: CandidateSettings, ready: asyncio.Event | None = None) -> None:
    bundle, registry = resolve_bundle(settings.bundle, settings.registry, "candidate_svc")
    servicer = CandidateServicer(settings)
    server = Server(settings.host, settings.port, settings.metrics_port)
    server.add(pb_grpc.add_CandidateRetrieverServicer_to_server, servicer, "recsys.v1.CandidateRetriever")
    await server.start(serving=False)  # health says NOT_SERVING until a model is loaded
    if bundle is None:
        bundle = await wait_for_champion(registry, settings.reload_interval_s, "candidate_svc")
    loaded = await asyncio.to_thread(load_generator, bundle, settings)
    version = loaded[1]
    servicer.swap(version, loaded)
    log.info("bundle %s: %d items, %s index", version, loaded[0].n_items, settings.index)
    gc.freeze()  # the loaded model is long-lived: keep the collector from rescanning it (p99)
    await server.set_serving(True)
    if ready is not None:
        ready.set()
    tasks = []
    if registry is not None:
        tasks.append(asyncio.create_task(follow_champion(
            registry, version, settings.reload_interval_s, "candidate_svc",
            lambda path: load_generator(path, settings), servicer.swap)))
    try:
        await server.serve()
    finally:
        for t in tasks:
            t.cancel()
