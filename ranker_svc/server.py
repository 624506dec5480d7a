"""The public Recommender servicer: validates the request, runs the shared pipeline against the
remote feature and candidate services, and maps every failure to a meaningful status code."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from pathlib import Path

import grpc
from grpc import aio

from ranker_svc.settings import RankerSettings
from recsys.metrics import MODEL_QUALITY, RECOMMEND_RESULTS, STAGE_LATENCY
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.model import ServingModel
from recsys.pipeline.recommend import recommend
from recsys.pipeline.types import RecommendParams
from recsys.rpc.host import Component, Loaded, ServiceHost
from recsys.rpc.remote import Channels, DependencyError, RemoteCandidateSource, RemoteFeatureSource
from recsys.rpc.versions import LiveVersions, UnknownVersion
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


def export_quality(models: LiveVersions[ServingModel]) -> None:
    """Validation metrics recorded in each held bundle, as recsys_model_quality."""
    MODEL_QUALITY.clear()
    for v in models.versions():
        for name, value in models.get(v)[1].metrics.items():
            if name.startswith("valid_"):
                MODEL_QUALITY.labels("ranker_svc", v, name).set(value)


def load_model(bundle: Path) -> Loaded[ServingModel]:
    model = ServingModel.load(bundle)
    return Loaded(model.version, model.created, model)


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, channels: Channels, settings: RankerSettings):
        self.models: LiveVersions[ServingModel] = LiveVersions("ranker_svc", on_change=export_quality)
        self.channels = channels
        self.settings = settings
        self.pipeline = PipelineConfig(n_candidates=settings.n_candidates, history_window=settings.history_window,
                                       affinity_window=settings.affinity_window,
                                       diversity_lambda=settings.diversity_lambda, mmr_pool=settings.mmr_pool)

    async def Recommend(self, request: pb.RecommendRequest, context: aio.ServicerContext) -> pb.RecommendResponse:
        problem = validate(request, self.settings.max_k)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if not len(self.models):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ranker_svc has no model loaded yet")
        try:
            _, model = self.models.get(request.model_version)
        except UnknownVersion:
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
    channels = Channels(settings.feature_addr, settings.candidate_addr)
    servicer = RecommenderServicer(channels, settings)
    host = ServiceHost("ranker_svc", settings.host, settings.port, settings.metrics_port)
    host.add(pb_grpc.add_RecommenderServicer_to_server, servicer, "recsys.v1.Recommender")
    component = Component("ranker_svc", load_model, servicer.models, ready=channels.hold)
    await host.run(component, settings.bundle, settings.registry, settings.reload_interval_s,
                   settings.default_version, ready, on_stop=channels.close)
