"""The public Recommender servicer: validates the request, runs the shared pipeline against the
remote feature and candidate services, and maps every failure to a meaningful status code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import replace
from pathlib import Path

import grpc
from grpc import aio

from ranker_svc.cache_follower import CacheFollower
from ranker_svc.cached import CachedLists, cacheable
from ranker_svc.exposures import ExposureLog
from ranker_svc.feedback import FeedbackServicer
from ranker_svc.settings import RankerSettings
from recsys.cache import open_cache
from recsys.client import WARMUP_METADATA
from recsys.events.codec import EXPOSURE_TOPIC
from recsys.events.consumers import consumer_name
from recsys.events.validate import Limits
from recsys.metrics import MODEL_QUALITY, RECOMMEND_RESULTS, STAGE_LATENCY
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.model import ServingModel
from recsys.pipeline.recommend import recommend
from recsys.pipeline.types import RecommendParams
from recsys.rpc.host import Component, Loaded, ServiceHost
from recsys.rpc.priority import IN_FLIGHT
from recsys.rpc.remote import Channels, DependencyError, RemoteCandidateSource, RemoteFeatureSource
from recsys.rpc.versions import LiveVersions, UnknownVersion
from recsys.stream import open_stream, topic_url
from recsys.v1 import feedback_pb2_grpc
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


class RecommendFailed(Exception):
    """A failure with the status the caller gets; raised inside a possibly shared computation and turned
    into an abort by each waiting request on its own context."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, channels: Channels, settings: RankerSettings, lists: CachedLists | None = None,
                 exposures: ExposureLog | None = None):
        self.models: LiveVersions[ServingModel] = LiveVersions("ranker_svc", on_change=export_quality)
        self.channels = channels
        self.settings = settings
        self.lists = lists
        self.exposures = exposures
        self.pipeline = PipelineConfig(n_candidates=settings.n_candidates, history_window=settings.history_window,
                                       affinity_window=settings.affinity_window,
                                       diversity_lambda=settings.diversity_lambda, mmr_pool=settings.mmr_pool,
                                       fresh_share=settings.fresh_share)

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
        lam = request.diversity_lambda if request.HasField("diversity_lambda") else None
        params = RecommendParams(
            user_id=request.user_id, k=request.k, diversity_lambda=lam,
            exclude=list(request.exclude_item_ids), attributes=dict(request.user_attributes),
            include_seen=request.include_seen, explain=request.explain, model_version=model.version)
        try:
            if self.lists is not None and cacheable(request):
                fp = self.lists.key(model.version, self.pipeline,
                                    self.pipeline.diversity_lambda if lam is None else lam, params.attributes)
                resp = await self.lists.recommend(
                    request.user_id, fp, request.k, params.exclude,
                    lambda depth: self._compute(replace(params, k=depth, exclude=[]), model, context, request_id))
            else:
                resp = await self._compute(params, model, context, request_id)
        except RecommendFailed as exc:
            await context.abort(exc.code, str(exc))
        resp.request_id = request_id
        outcome = "fallback" if resp.fallback else "empty" if not resp.items else "ok"
        RECOMMEND_RESULTS.labels(outcome).inc()
        if resp.cold_start:
            RECOMMEND_RESULTS.labels("cold_start").inc()
        if log.isEnabledFor(logging.DEBUG):  # an access log, with the caller's context, when asked for
            ctx = request.context
            log.debug("request_id=%s user=%s k=%d model=%s outcome=%s cached=%s surface=%s device=%s extra=%s",
                      request_id, request.user_id, request.k, resp.model_version, outcome, resp.cached, ctx.surface,
                      ctx.device, dict(ctx.extra))
        if self.exposures is not None and not _is_warmup(context):
            self.exposures.record(request, resp)
        return resp

    async def _compute(self, params: RecommendParams, model: ServingModel, context: aio.ServicerContext,
                       request_id: str) -> pb.RecommendResponse:
        """The pipeline against the remote services, as a response; failures as RecommendFailed."""
        dep_timeout = self.settings.dependency_timeout_ms / 1000.0

        def timeout() -> float:
            remaining = context.time_remaining()
            return dep_timeout if remaining is None else max(0.001, min(dep_timeout, remaining))

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
            raise RecommendFailed(code, str(exc)) from exc
        except (grpc.RpcError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or corrupt data must surface as INTERNAL with a message, not UNKNOWN
            log.exception("request %s failed", request_id)
            raise RecommendFailed(grpc.StatusCode.INTERNAL,
                                  f"recommendation failed: {type(exc).__name__}: {exc}") from exc
        for stage, seconds in rec.timings.items():
            STAGE_LATENCY.labels(stage).observe(seconds)
        resp = pb.RecommendResponse(model_version=rec.model_version, cold_start=rec.cold_start,
                                    fallback=rec.fallback, diversity_lambda=rec.diversity_lambda)
        for it in rec.items:
            msg = resp.items.add(item_id=it.item_id, score=it.score, sources=it.sources, title=it.title,
                                 categories=it.categories)
            for feature, value, contribution in it.contributions:
                msg.contributions.add(feature=feature, value=value, contribution=contribution)
        return resp


async def trim_periodically(streams: list, interval_s: float) -> None:
    """The producer applies the streams' retention (docs/event-stream.md): whole acknowledged segments
    or entries older than the retention age; several replicas doing it is harmless."""
    while True:
        await asyncio.sleep(interval_s)
        for stream in streams:
            try:
                removed = await asyncio.to_thread(stream.trim)
                if removed:
                    log.info("event stream retention removed %d entries", removed)
            except Exception as exc:  # the stream being down is reported by Send and the consumers
                log.warning("event stream trim failed: %s", exc)


def _is_warmup(context: aio.ServicerContext) -> bool:
    """A cache warm-up call (`recsys cache warm`) shows nothing to anyone: it is not an exposure."""
    return any(k == WARMUP_METADATA[0] for k, _ in (context.invocation_metadata() or ()))


async def serve(settings: RankerSettings, ready: asyncio.Event | None = None) -> None:
    stream = open_stream(settings.stream)
    cache = open_cache(settings.cache, ttl_s=settings.cache_ttl_s, max_new=settings.cache_max_new)
    lists = CachedLists(cache, settings.cache_depth) if cache is not None else None
    exposure_stream = open_stream(topic_url(settings.stream, EXPOSURE_TOPIC)) if settings.exposures else None
    exposures = (ExposureLog(exposure_stream, settings.exposure_queue, pace=IN_FLIGHT.yield_to_requests)
                 if exposure_stream is not None else None)
    channels = Channels(settings.feature_addr, settings.candidate_addr)
    servicer = RecommenderServicer(channels, settings, lists, exposures)
    producer = consumer_name()
    feedback = FeedbackServicer(stream, Limits(max_batch=settings.max_send_batch),
                                on_accepted=lists.note if lists is not None else None, producer=producer)
    host = ServiceHost("ranker_svc", settings.host, settings.port, settings.metrics_port)
    host.add(pb_grpc.add_RecommenderServicer_to_server, servicer, "recsys.v1.Recommender")
    host.add(feedback_pb2_grpc.add_FeedbackServicer_to_server, feedback, "recsys.v1.Feedback")
    component = Component("ranker_svc", load_model, servicer.models, ready=channels.hold)
    # An in-process cache hears interactions sent through other replicas from the stream.
    follower = (CacheFollower(settings.stream, cache, producer, settings.consumer_batch)
                if cache is not None and getattr(cache, "in_process", False) else None)
    if follower is not None:
        follower.start(stream)
    if exposures is not None:
        exposures.start()
    trimmer = asyncio.get_running_loop().create_task(
        trim_periodically([s for s in (stream, exposure_stream) if s is not None], settings.stream_trim_interval_s))

    async def stop() -> None:
        trimmer.cancel()
        if exposures is not None:
            await exposures.close()
        if follower is not None:
            await asyncio.to_thread(follower.stop)
            with contextlib.suppress(Exception):  # its own group: nobody reads it after this replica
                stream.delete_group(follower.group)
        await channels.close()

    await host.run(component, settings.bundle, settings.registry, settings.reload_interval_s,
                   settings.default_version, ready, on_stop=stop)
