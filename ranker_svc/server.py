"""The public Recommender servicer: validates the request, runs the shared pipeline against the
remote feature and candidate services, and maps every failure to a meaningful status code."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
from grpc import aio

from ranker_svc.cached import CachedLists, cacheable
from ranker_svc.degraded import DegradedAnswers
from ranker_svc.experiments import LiveExperiments
from ranker_svc.exposures import ExposureLog
from ranker_svc.feedback import FeedbackServicer
from ranker_svc.forget import UsersServicer
from ranker_svc.rerank_request import FIELDS as RERANK_FIELDS
from ranker_svc.rerank_request import overrides as rerank_overrides
from ranker_svc.rerank_request import problem as rerank_problem
from ranker_svc.settings import RankerSettings
from ranker_svc.shadows import ShadowRunner
from ranker_svc.stream_follower import StreamFollower
from recsys.cache import CacheUnavailable, open_cache
from recsys.client import WARMUP_METADATA
from recsys.events.codec import EXPOSURE_TOPIC
from recsys.events.consumers import consumer_name
from recsys.events.validate import Limits
from recsys.experiments.router import RequestFacts, Route, UnknownArm, needs_known
from recsys.experiments.router import route as route_request
from recsys.forget import open_tombstones
from recsys.log_limit import RateLimitedLog
from recsys.metrics import (
    EXPERIMENT_CACHE_HITS,
    EXPERIMENT_IMPRESSIONS,
    EXPERIMENT_LATENCY,
    EXPERIMENT_REQUESTS,
    MODEL_QUALITY,
    RECOMMEND_RESULTS,
    STAGE_LATENCY,
)
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.model import ServingModel
from recsys.pipeline.recommend import recommend
from recsys.pipeline.types import RecommendParams
from recsys.rpc.admission import ServerLimits
from recsys.rpc.auth import denied_privilege
from recsys.rpc.host import Component, Loaded, ServiceHost
from recsys.rpc.limits import RequestLimits, recommend_problem
from recsys.rpc.priority import IN_FLIGHT
from recsys.rpc.remote import Channels, DependencyError, RemoteCandidateSource, RemoteFeatureSource
from recsys.rpc.request_id import bind as bind_request_id
from recsys.rpc.request_id import problem as request_id_problem
from recsys.rpc.security import security_from
from recsys.rpc.versions import LiveVersions, UnknownVersion
from recsys.stream import open_stream, topic_url
from recsys.v1 import feedback_pb2_grpc, users_pb2_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

log = logging.getLogger("ranker_svc")
DEPENDENCY_LOG = RateLimitedLog(log)  # a dependency down under load fails ~1,000 calls a second
_RESERVE_S = 0.02  # at most this (and 10%) of the caller's deadline is kept for a degraded answer
CALLER_SERVICES = ("recsys.v1.Recommender", "recsys.v1.Feedback", "recsys.v1.ModelVersions",  # in the callers file
                   "recsys.v1.Users")
_PIPELINE_OVERRIDES = ("n_candidates", "source_quotas", "diversity_lambda", *RERANK_FIELDS)  # an arm's settings


def validate(request: pb.RecommendRequest, max_k: int, limits: RequestLimits | None = None) -> str | None:
    """The first problem with a request, as a message naming the field, or None (sizes: recsys/rpc/limits.py)."""
    if not request.user_id:
        return "user_id must be non-empty"
    problem = recommend_problem(request, limits or RequestLimits())
    if problem:
        return problem
    if request.k < 1 or request.k > max_k:
        return f"k must be between 1 and {max_k}, got {request.k}"
    if request.HasField("diversity_lambda"):
        lam = request.diversity_lambda
        if math.isnan(lam) or not 0.0 <= lam <= 1.0:
            return f"diversity_lambda must be in [0, 1], got {lam}"
    if problem := rerank_problem(request):
        return problem
    if request.request_id:
        return request_id_problem(request.request_id)
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

    def __init__(self, code: grpc.StatusCode, message: str, dependency: str = ""):
        super().__init__(message)
        self.code = code
        self.dependency = dependency  # the service that could not answer, when that is the cause


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, channels: Channels, settings: RankerSettings, lists: CachedLists | None = None,
                 exposures: ExposureLog | None = None):
        self.experiments = LiveExperiments(settings.experiments, lambda: set(self.models.versions()))
        self.models: LiveVersions[ServingModel] = LiveVersions("ranker_svc", on_change=self._versions_changed)
        self.shadows = ShadowRunner(self._compute_shadow, exposures, settings.shadow_max_in_flight)
        self.degraded = DegradedAnswers(settings.degraded_memory_users)
        self.channels = channels
        self.settings = settings
        self.limits = RequestLimits.of(settings)
        self.lists = lists
        self.exposures = exposures
        self.pipeline = PipelineConfig(n_candidates=settings.n_candidates, history_window=settings.history_window,
                                       affinity_window=settings.affinity_window,
                                       diversity_lambda=settings.diversity_lambda, mmr_pool=settings.mmr_pool,
                                       fresh_share=settings.fresh_share, reranker=settings.reranker,
                                       calibration_lambda=settings.calibration_lambda,
                                       category_cap=settings.category_cap, longtail_beta=settings.longtail_beta)

    async def Recommend(self, request: pb.RecommendRequest, context: aio.ServicerContext) -> pb.RecommendResponse:
        problem = validate(request, self.settings.max_k, self.limits)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if denied := denied_privilege(request):  # pin_version, force_arms, explain (the callers file)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        if not len(self.models):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ranker_svc has no model loaded yet")
        request_id = request.request_id or uuid.uuid4().hex
        bind_request_id(request_id)  # its logs, its span, and the x-request-id of its internal calls
        t0 = time.perf_counter()
        route = Route()
        if not request.model_version:  # a pinned version is a debugging call: no experiment
            try:
                route = await self._route(request)
            except UnknownArm as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            _, model = self.models.get(request.model_version or route.model_version or "")
        except UnknownVersion:
            if not route.model_version:
                await context.abort(grpc.StatusCode.NOT_FOUND,
                                    f"model_version {request.model_version!r} is not loaded "
                                    f"(loaded: {', '.join(self.models.versions())})")
            # an arm's version retired since the file was validated: the default answers, no arm is claimed
            route = Route()
            _, model = self.models.get("")
        pipeline = self._pipeline(model).override(**({k: route.overrides.get(k) for k in _PIPELINE_OVERRIDES}
                                                     | rerank_overrides(request)))  # the request's re-ranker wins
        lam = request.diversity_lambda if request.HasField("diversity_lambda") else None
        params = RecommendParams(
            user_id=request.user_id, k=request.k, diversity_lambda=lam,
            exclude=list(request.exclude_item_ids), attributes=dict(request.user_attributes),
            include_seen=request.include_seen, explain=request.explain, model_version=model.version)
        arms = tuple(f"{a.experiment}={a.arm}" for a in route.assignments)
        try:
            if self.lists is not None and cacheable(request) and route.overrides.get("cache", True):
                fp = self.lists.key(model.version, pipeline, pipeline.diversity_lambda if lam is None else lam,
                                    params.attributes, arms)
                resp = await self.lists.recommend(
                    request.user_id, fp, request.k, params.exclude,
                    lambda depth: self._compute(replace(params, k=depth, exclude=[]), model, context.time_remaining,
                                                request_id,
                                                pipeline))
            else:
                resp = await self._compute(params, model, context.time_remaining, request_id, pipeline)
        except RecommendFailed as exc:
            fallback = await self._degraded(exc, params, model, pipeline.diversity_lambda if lam is None else lam)
            if fallback is None:
                record_arms(route, "error", t0, cached=False)
                await context.abort(exc.code, str(exc))
            resp = fallback
        if not resp.cached:
            self.degraded.remember(request.user_id, resp, started=t0)  # not if the user is forgotten meanwhile
        resp.request_id = request_id
        outcome = "degraded" if resp.degraded else "fallback" if resp.fallback else "empty" if not resp.items else "ok"
        RECOMMEND_RESULTS.labels(outcome).inc()
        if resp.cold_start:
            RECOMMEND_RESULTS.labels("cold_start").inc()
        for a in route.assignments:
            resp.assignments.add(experiment=a.experiment, arm=a.arm, forced=a.forced, unit=a.unit)
        record_arms(route, outcome, t0, cached=resp.cached, items=len(resp.items))
        if log.isEnabledFor(logging.DEBUG):  # an access log, with the caller's context, when asked for
            ctx = request.context
            log.debug("request_id=%s user=%s k=%d model=%s outcome=%s cached=%s surface=%s device=%s arms=%s extra=%s",
                      request_id, request.user_id, request.k, resp.model_version, outcome, resp.cached, ctx.surface,
                      ctx.device, ",".join(arms), dict(ctx.extra))
        if self.exposures is not None and not _is_warmup(context):
            self.exposures.record(request, resp, started=t0)
            self.shadows.start(self.experiments.config.shadows, request, request_id, params, model.version)
        return resp

    async def _degraded(self, exc: RecommendFailed, params: RecommendParams, model: ServingModel,
                        lam: float) -> pb.RecommendResponse | None:
        """A dependency is down or too slow: what the ranker can serve alone (ranker_svc/degraded.py)."""
        if exc.code != grpc.StatusCode.UNAVAILABLE or not exc.dependency:
            return None
        drop = list(params.exclude)
        if self.lists is not None:  # what the user interacted with since their last good list
            with contextlib.suppress(CacheUnavailable):
                drop += await self.lists.noted(params.user_id)
        return self.degraded.answer(params.user_id, params.k, model, exc.dependency, drop, lam)

    async def _compute_shadow(self, params: RecommendParams, version: str) -> pb.RecommendResponse:
        """A shadow's answer: its version, default settings, its own deadline (the dependency timeout)."""
        _, model = self.models.get(version)
        deadline = time.monotonic() + self.settings.dependency_timeout_ms / 1000.0
        return await self._compute(replace(params, model_version=model.version, explain=False), model,
                                   lambda: deadline - time.monotonic(), "shadow", self._pipeline(model))

    def _pipeline(self, model: ServingModel) -> PipelineConfig:
        """The settings a version serves with by default: the re-ranker its training chose on validation
        (`bundle_reranker`), else the service's; arms and requests override either."""
        return self.pipeline.with_defaults(model.defaults) if self.settings.bundle_reranker else self.pipeline

    def _versions_changed(self, models: LiveVersions[ServingModel]) -> None:
        """A version came or went: its quality metrics, and the experiments file checked against the new set
        before a request can be routed to a version that is gone or skip one that just arrived."""
        export_quality(models)
        self.experiments.reload()

    async def _route(self, request: pb.RecommendRequest) -> Route:
        config = self.experiments.config
        if not config.layers and not request.force_arms:
            return Route()
        facts = RequestFacts(request.user_id, request.context.surface, request.context.device,
                             dict(request.user_attributes), dict(request.context.extra))
        now = dt.datetime.now(dt.UTC)
        if needs_known(config, facts, now):  # an experiment targets known or new users: one lookup
            facts = replace(facts, known=await self._known(request.user_id))
        return route_request(config, facts, now, dict(request.force_arms))

    async def _known(self, user_id: str) -> bool | None:
        """Whether feature_svc has a history for the user; None (targeting fails closed) if it cannot say."""
        timeout = self.settings.dependency_timeout_ms / 1000.0
        try:
            user = await RemoteFeatureSource(self.channels, lambda: timeout).get_user(user_id, history_limit=1)
        except DependencyError:
            return None
        return user.found and bool(user.history)

    async def _compute(self, params: RecommendParams, model: ServingModel, time_remaining: Callable[[], float | None],
                       request_id: str, pipeline: PipelineConfig) -> pb.RecommendResponse:
        """The pipeline against the remote services, as a response; failures as RecommendFailed.
        `time_remaining` is the caller's (context.time_remaining), or a shadow's own deadline."""
        dep_timeout = self.settings.dependency_timeout_ms / 1000.0

        def timeout() -> float:
            remaining = time_remaining()
            # keep a little of the caller's time for a degraded answer if the dependency does not answer
            if remaining is None:
                return dep_timeout
            return max(0.001, min(dep_timeout, remaining - min(_RESERVE_S, 0.1 * remaining)))

        try:
            rec = await recommend(params, model, RemoteFeatureSource(self.channels, timeout),
                                  RemoteCandidateSource(self.channels, timeout), pipeline)
        except DependencyError as exc:
            DEPENDENCY_LOG.warning((exc.service, exc.code), "request %s: %s", request_id, exc)
            code = exc.code
            remaining = time_remaining()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and (remaining is None or remaining > 0.001):
                # our own per-dependency timeout fired, not the caller's deadline: the dependency is unhealthy
                code = grpc.StatusCode.UNAVAILABLE
            raise RecommendFailed(code, str(exc), exc.service) from exc
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


def record_arms(route: Route, outcome: str, t0: float, cached: bool, items: int = 0) -> None:
    """Per-arm metrics; a forced (QA) answer is counted apart and never in the latency of its arm."""
    seconds = time.perf_counter() - t0
    for a in route.assignments:
        EXPERIMENT_REQUESTS.labels(a.experiment, a.arm, outcome, "true" if a.forced else "false").inc()
        if not a.forced:
            EXPERIMENT_LATENCY.labels(a.experiment, a.arm).observe(seconds)
            EXPERIMENT_IMPRESSIONS.labels(a.experiment, a.arm).inc(items)
            if cached:
                EXPERIMENT_CACHE_HITS.labels(a.experiment, a.arm).inc()


def _is_warmup(context: aio.ServicerContext) -> bool:
    """A cache warm-up call (`recsys cache warm`) shows nothing to anyone: it is not an exposure."""
    return any(k == WARMUP_METADATA[0] for k, _ in (context.invocation_metadata() or ()))


async def serve(settings: RankerSettings, ready: asyncio.Event | None = None) -> None:
    security = security_from(settings, "ranker_svc", CALLER_SERVICES)  # TLS unless plaintext; callers file
    stream = open_stream(settings.stream)
    cache = open_cache(settings.cache, ttl_s=settings.cache_ttl_s, max_new=settings.cache_max_new)
    lists = CachedLists(cache, settings.cache_depth) if cache is not None else None
    exposure_stream = open_stream(topic_url(settings.stream, EXPOSURE_TOPIC)) if settings.exposures else None
    exposures = (ExposureLog(exposure_stream, settings.exposure_queue, pace=IN_FLIGHT.yield_to_requests)
                 if exposure_stream is not None else None)
    channels = Channels(settings.feature_addr, settings.candidate_addr, security.channel_certificates())
    servicer = RecommenderServicer(channels, settings, lists, exposures)
    producer = consumer_name()
    feedback = FeedbackServicer(stream, Limits.of(settings), on_accepted=lists.note if lists is not None else None,
                                producer=producer, pace=IN_FLIGHT.yield_to_requests)
    host = ServiceHost("ranker_svc", settings.host, settings.port, settings.metrics_port, security,
                       ServerLimits.of(settings))
    host.add(pb_grpc.add_RecommenderServicer_to_server, servicer, "recsys.v1.Recommender")
    host.add(feedback_pb2_grpc.add_FeedbackServicer_to_server, feedback, "recsys.v1.Feedback")
    tombstones = open_tombstones(settings.stream)
    users = UsersServicer(stream, tombstones, channels, servicer.degraded, lists, exposures, exposure_stream,
                          producer, settings.max_id_len)
    host.add(users_pb2_grpc.add_UsersServicer_to_server, users, "recsys.v1.Users")  # Forget (ranker_svc/forget.py)
    component = Component("ranker_svc", load_model, servicer.models, ready=channels.hold)
    # A child process follows the stream: an in-process cache hears interactions sent through other
    # replicas from it, this replica's memory hears forgets taken by others, and clicks and conversions are
    # joined to their exposures (per experiment arm, and per model version: the online CTR by version, with
    # or without an experiments file).
    follow_cache = cache is not None and getattr(cache, "in_process", False)
    outcomes = exposure_stream is not None
    follower = StreamFollower(settings.stream, cache if follow_cache else None, producer, settings.consumer_batch,
                              outcomes=outcomes, on_forget=users.forget_here)
    follower.start(stream, exposure_stream)
    if exposures is not None:
        exposures.start()
    experiments_task = asyncio.get_running_loop().create_task(
        servicer.experiments.follow(settings.experiments_reload_s))
    trimmer = asyncio.get_running_loop().create_task(
        trim_periodically([s for s in (stream, exposure_stream) if s is not None], settings.stream_trim_interval_s))

    async def stop() -> None:
        trimmer.cancel()
        experiments_task.cancel()
        await servicer.shadows.close()
        if exposures is not None:
            await exposures.close()
        await asyncio.to_thread(follower.stop)  # and deletes this replica's own groups
        tombstones.close()
        await channels.close()

    await host.run(component, settings.bundle, settings.registry, settings.reload_interval_s,
                   settings.default_version, ready, on_stop=stop, on_loaded=servicer.experiments.start)
