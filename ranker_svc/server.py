"""The public Recommender servicer: validates the request, runs the shared pipeline against the
remote feature and candidate services, and maps every failure to a meaningful status code."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import uuid
from pathlib import Path

import grpc
from grpc import aio

from ranker_svc.models import ModelSet, UnknownModelVersion
from ranker_svc.remote import Channels, DependencyError, RemoteCandidateSource, RemoteFeatureSource
from ranker_svc.settings import RankerSettings
from recsys.metrics import RECOMMEND_RESULTS, STAGE_LATENCY
from recsys.pipeline.model import ServingModel
from recsys.pipeline.recommend import PipelineConfig, recommend
from recsys.pipeline.types import RecommendParams
from recsys.rpc.reload import follow_champion, resolve_bundle, wait_for_champion
from recsys.rpc.server import Server
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

log = logging.getLogger("ranker_svc")
MAX_ID_LEN = 512
MAX_EXCLUDE = 10_000


def validate(request: pb.RecommendRequest, max_k: int) -> str | None:
    """The first problem with a request, as a message naming the field, or None."""
    if not request.user_id:
        return "user_id must be non-empty"
    if len(request.user_id) > MAX_ID_LEN:
        return f"user_id must be at most {MAX_ID_LEN} characters"
    if request.k < 1 or request.k > max_k:
        return f"k must be between 1 and {max_k}, got {request.k}"
    if request.HasField("diversity_lambda"):
        lam = request.diversity_lambda
        if math.isnan(lam) or not 0.0 <= lam <= 1.0:
            return f"diversity_lambda must be in [0, 1], got {lam}"
    if len(request.exclude_item_ids) > MAX_EXCLUDE:
        return f"exclude_item_ids: at most {MAX_EXCLUDE} ids, got {len(request.exclude_item_ids)}"
    if any(not x for x in request.exclude_item_ids):
        return "exclude_item_ids must not contain empty ids"
    return None


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, models: ModelSet, channels: Channels, settings: RankerSettings):
        self.models = models
        self.channels = channels
        self.settings = settings
        self.pipeline = PipelineConfig(n_candidates=settings.n_candidates, max_history=settings.max_history,
                                       diversity_lambda=settings.diversity_lambda, mmr_pool=settings.mmr_pool)

    async def Recommend(self, request: pb.RecommendRequest, context: aio.ServicerContext) -> pb.RecommendResponse:
        problem = validate(request, self.settings.max_k)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if not self.models.versions():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ranker_svc has no model loaded yet")
        try:
            model = self.models.get(request.model_version)
        except UnknownModelVersion:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"model_version {request.model_version!r} is not loaded "
                                f"(loaded: {', '.join(self.models.versions())})")
        request_id = request.request_id or uuid.uuid4().hex
        dep_timeout = self.settings.dependency_timeout_ms / 1000.0

        def timeout() -> float:
            remaining = context.time_remaining()
            return dep_timeout if remaining is None else max(0.001, min(dep_timeout, remaining))

        params = RecommendParams(
            user_id=request.user_id, k=request.k,
            diversity_lambda=request.diversity_lambda if request.HasField("diversity_lambda") else None,
            exclude=list(request.exclude_item_ids), attributes=dict(request.user_attributes),
            include_seen=request.include_seen, explain=request.explain, model_version=model.version)
        try:
            rec = await recommend(params, model, RemoteFeatureSource(self.channels, timeout),
                                  RemoteCandidateSource(self.channels, timeout), self.pipeline)
        except DependencyError as exc:
            log.warning("request %s: %s", request_id, exc)
            code = exc.code
            remaining = context.time_remaining()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and (remaining is None or remaining > 0.001):
                # our own per-dependency timeout fired, not the caller's deadline: the dependency is unhealthy
                code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc))
        except (grpc.RpcError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or corrupt data must surface as INTERNAL with a message, not UNKNOWN
            log.exception("request %s failed", request_id)
            await context.abort(grpc.StatusCode.INTERNAL, f"recommendation failed: {type(exc).__name__}: {exc}")
        for stage, seconds in rec.timings.items():
            STAGE_LATENCY.labels(stage).observe(seconds)
        outcome = "fallback" if rec.fallback else "empty" if not rec.items else "ok"
        if log.isEnabledFor(logging.DEBUG):  # an access log, with the caller's context, when asked for
            ctx = request.context
            log.debug("request_id=%s user=%s k=%d model=%s outcome=%s surface=%s device=%s extra=%s ms=%.2f",
                      request_id, request.user_id, request.k, rec.model_version, outcome, ctx.surface, ctx.device,
                      dict(ctx.extra), 1000 * sum(rec.timings.values()))
        RECOMMEND_RESULTS.labels(outcome).inc()
        if rec.cold_start:
            RECOMMEND_RESULTS.labels("cold_start").inc()
        resp = pb.RecommendResponse(request_id=request_id, model_version=rec.model_version,
                                    cold_start=rec.cold_start, fallback=rec.fallback,
                                    diversity_lambda=rec.diversity_lambda)
        for it in rec.items:
            msg = resp.items.add(item_id=it.item_id, score=it.score, sources=it.sources, title=it.title,
                                 categories=it.categories)
            for feature, value, contribution in it.contributions:
                msg.contributions.add(feature=feature, value=value, contribution=contribution)
        return resp


async def serve(settings: RankerSettings, ready: asyncio.Event | None = None) -> None:
    models = ModelSet()
    registry = None
    if settings.registry and settings.bundle:
        raise SystemExit("ranker_svc: give either --bundle or --registry, not both")
    if not settings.registry and not settings.bundle:
        raise SystemExit("ranker_svc: --bundle or --registry (RECSYS_BUNDLE / RECSYS_REGISTRY) is required")
    channels = Channels(settings.feature_addr, settings.candidate_addr)
    server = Server(settings.host, settings.port, settings.metrics_port)
    server.add(pb_grpc.add_RecommenderServicer_to_server, RecommenderServicer(models, channels, settings),
               "recsys.v1.Recommender")
    await server.start(serving=False)  # health says NOT_SERVING until a model is loaded
    if settings.registry:
        champion, registry = resolve_bundle("", settings.registry, "ranker_svc")
        if champion is None:
            champion = await wait_for_champion(registry, settings.reload_interval_s, "ranker_svc")
        await asyncio.to_thread(models.load, champion)
    for b in settings.bundle:
        await asyncio.to_thread(models.load, Path(b))
    if settings.default_version:
        models.set_default(settings.default_version)
    gc.freeze()  # the loaded model is long-lived: keep the collector from rescanning it (p99)
    await server.set_serving(True)
    if ready is not None:
        ready.set()
    tasks = []
    if registry is not None:
        def swap(version: str, model) -> None:
            previous = models.default_version
            models.add(model)
            models.set_default(version)
            models.retain({version, previous})  # the previous stays loaded for requests pinned to it

        tasks.append(asyncio.create_task(follow_champion(
            registry, models.default_version, settings.reload_interval_s, "ranker_svc", ServingModel.load, swap)))
    try:
        await server.serve()
    finally:
        for t in tasks:
            t.cancel()
        await channels.close()
