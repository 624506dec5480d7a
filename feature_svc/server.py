"""The FeatureStore gRPC servicer: batch reads of user and item features, and event ingestion, for every live
model version (one storage per version: its own namespace in a shared store)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import numpy as np
from grpc import aio

from feature_svc.settings import FeatureSettings
from recsys.bundle import bundle_stream_position, verify_bundle
from recsys.events.apply import FeatureApplier
from recsys.events.consumers import VersionConsumers
from recsys.metrics import FEATURE_EVENTS, FEATURE_LAST_UPDATE
from recsys.rpc.host import Component, Loaded, ServiceHost, VersionsServicer
from recsys.rpc.priority import IN_FLIGHT
from recsys.rpc.versions import LiveVersions, UnknownVersion
from recsys.storage import (
    DEFAULT_NAMESPACE,
    Event,
    FeatureStorage,
    StorageError,
    open_storage,
    version_namespace,
)
from recsys.storage.bundle_loader import load_bundle_features
from recsys.stream import open_stream
from recsys.v1 import features_pb2 as pb
from recsys.v1 import features_pb2_grpc as pb_grpc
from recsys.v1 import versions_pb2_grpc

log = logging.getLogger("feature_svc")
MAX_ID_LEN = 512
# Events applied between two yields to requests: about 0.3 ms of work, so a request arriving mid-slice
# waits little for the interpreter lock.
CONSUMER_SLICE = 16
UNVERSIONED = ""  # a store started without a bundle or registry: it has no version and answers every one


class FeatureStoreServicer(pb_grpc.FeatureStoreServicer):
    def __init__(self, max_batch: int = 10_000, on_change=None):
        self.max_batch = max_batch
        self.versions: LiveVersions[FeatureStorage] = LiveVersions("feature_svc", on_change=on_change,
                                                                   on_retire=_close)

    async def _storage(self, version: str, context: aio.ServicerContext) -> tuple[str, FeatureStorage]:
        if not len(self.versions):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "feature_svc has no features loaded yet")
        if self.versions.versions() == [UNVERSIONED]:
            return self.versions.get(UNVERSIONED)
        try:
            return self.versions.get(version)
        except UnknownVersion as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    @staticmethod
    async def _call(storage: FeatureStorage, fn, *args):
        # The in-process store answers in microseconds; a network store must not block the event loop.
        return fn(*args) if storage.in_process else await asyncio.to_thread(fn, *args)

    async def _consistent(self, storage: FeatureStorage, names_fn, read, *args):
        """Records and the feature names they align with, from the same store state: a bulk reload
        between the two reads (another thread) is detected and the read repeated."""
        for _ in range(5):
            before = names_fn()
            records = await self._call(storage, read, *args)
            if names_fn() == before and all(r is None or len(r.values) == len(before) for r in records):
                return before, records
        raise StorageError("the feature store kept reloading during the read")

    async def _check_ids(self, ids, field_name: str, context: aio.ServicerContext) -> None:
        if len(ids) > self.max_batch:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{field_name}: at most {self.max_batch} ids per call, got {len(ids)}")
        for i, x in enumerate(ids):
            if not x or len(x) > MAX_ID_LEN:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{field_name}[{i}] must be a non-empty id of at most {MAX_ID_LEN} characters")

    async def GetUserFeatures(self, request: pb.GetUserFeaturesRequest, context) -> pb.GetUserFeaturesResponse:
        await self._check_ids(request.user_ids, "user_ids", context)
        if request.history_limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "history_limit must be >= 0")
        version, storage = await self._storage(request.model_version, context)
        try:
            names, records = await self._consistent(storage, lambda: storage.user_feature_names, storage.get_users,
                                                    list(request.user_ids), request.history_limit)
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        resp = pb.GetUserFeaturesResponse(feature_names=names, model_version=version)
        for uid, rec in zip(request.user_ids, records, strict=True):
            if rec is None:
                resp.users.add(user_id=uid, found=False)
            else:
                resp.users.add(user_id=uid, found=True, values=rec.values.tolist(), history=rec.history,
                               attributes=rec.attributes)
        return resp

    async def GetItemFeatures(self, request: pb.GetItemFeaturesRequest, context) -> pb.GetItemFeaturesResponse:
        await self._check_ids(request.item_ids, "item_ids", context)
        version, storage = await self._storage(request.model_version, context)
        try:
            names, records = await self._consistent(storage, lambda: storage.item_feature_names, storage.get_items,
                                                    list(request.item_ids))
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        found = [rec is not None for rec in records]
        values = np.full((len(records), len(names)), np.nan, dtype=np.float32)
        titles, categories, counts = [], [], []
        for i, rec in enumerate(records):
            if rec is None:
                titles.append("")
                counts.append(0)
            else:
                values[i] = rec.values
                titles.append(rec.title)
                categories.extend(rec.categories)
                counts.append(len(rec.categories))
        return pb.GetItemFeaturesResponse(feature_names=names, item_ids=request.item_ids, found=found,
                                          values=values.ravel().tolist(), titles=titles, categories=categories,
                                          category_counts=counts, model_version=version)

    async def RecordEvents(self, request: pb.RecordEventsRequest, context) -> pb.RecordEventsResponse:
        if len(request.events) > self.max_batch:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"events: at most {self.max_batch} per call, got {len(request.events)}")
        events = []
        for i, e in enumerate(request.events):
            for name in ("user_id", "item_id"):
                value = getattr(e, name)
                if not value or len(value) > MAX_ID_LEN:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"events[{i}].{name} must be a non-empty id")
            events.append(Event(e.user_id, e.item_id, e.event or "view", e.value or 1.0,
                                e.timestamp or int(time.time()), e.event_id))
        if not len(self.versions):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "feature_svc has no features loaded yet")
        default = self.versions.default_version
        n = 0
        try:  # every live version keeps its own histories: each must hear every event
            for version in self.versions.versions():
                _, storage = self.versions.get(version)
                # a worker thread even for the in-process store: a big batch must never stall reads
                applied = await asyncio.to_thread(storage.record_events, events)
                if version == default:
                    n = applied
                    FEATURE_LAST_UPDATE.set(storage.last_update())
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        FEATURE_EVENTS.inc(n)
        return pb.RecordEventsResponse(recorded=n)


def _close(storage: FeatureStorage) -> None:
    storage.close()


def _open(settings: FeatureSettings, namespace: str = DEFAULT_NAMESPACE) -> FeatureStorage:
    storage = open_storage(settings.storage, namespace=namespace)
    storage.history_cap = settings.max_history
    return storage


def load_version(bundle: Path, settings: FeatureSettings) -> Loaded[FeatureStorage]:
    """The storage of one bundle's features: loaded from the bundle, or (load_bundle off) one that
    `recsys features load` filled; a store not holding the version yet is retried on the next poll."""
    meta = verify_bundle(bundle)
    storage = _open(settings, version_namespace(meta.version))
    storage.stream_start = bundle_stream_position(bundle)  # where this version's consumer starts
    try:
        if settings.load_bundle:
            load_bundle_features(storage, bundle)
            log.info("loaded features of bundle %s into %s", meta.version, settings.storage)
        elif storage.loaded_bundle() != meta.version:
            raise StorageError(f"the store does not hold the features of {meta.version} yet "
                               f"(run `recsys features load --bundle {bundle}`)")
        FEATURE_LAST_UPDATE.set(storage.last_update())
    except BaseException:
        storage.close()
        raise
    return Loaded(meta.version, meta.created, storage)


def feature_consumers(settings: FeatureSettings) -> VersionConsumers[FeatureStorage]:
    """The online-features consumer of every live version: events on the stream become history,
    counters, new items and user attributes in that version's store."""
    return VersionConsumers(
        open_stream(settings.stream), "features",
        handler=lambda group, storage: FeatureApplier(storage, group),
        start=lambda version, storage: getattr(storage, "stream_start", "begin"),
        replay=lambda storage: storage.in_process, batch=settings.consumer_batch,
        pace=IN_FLIGHT.yield_to_requests, slice_size=CONSUMER_SLICE)


async def serve(settings: FeatureSettings, ready: asyncio.Event | None = None) -> None:
    consumers = feature_consumers(settings)
    servicer = FeatureStoreServicer(settings.max_batch, on_change=consumers.sync)
    host = ServiceHost("feature_svc", settings.host, settings.port, settings.metrics_port)
    host.add(pb_grpc.add_FeatureStoreServicer_to_server, servicer, "recsys.v1.FeatureStore")
    component = None
    if settings.bundle or settings.registry:
        component = Component("feature_svc", lambda path: load_version(path, settings), servicer.versions)
    else:
        servicer.versions.add(UNVERSIONED, _open(settings))
        host.add(versions_pb2_grpc.add_ModelVersionsServicer_to_server,
                 VersionsServicer("feature_svc", servicer.versions), "recsys.v1.ModelVersions")
    try:
        await host.run(component, settings.bundle, settings.registry, settings.reload_interval_s,
                       settings.default_version, ready)
    finally:
        consumers.close()
        for version in servicer.versions.versions():
            _close(servicer.versions.get(version)[1])
