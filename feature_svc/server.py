"""The FeatureStore gRPC servicer: batch reads of user and item features, and event ingestion."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import grpc
import numpy as np
from grpc import aio

from feature_svc.settings import FeatureSettings
from feature_svc.storage import EmbeddedStorage, Event, FeatureStorage, StorageError, open_storage
from recsys.bundle import verify_bundle
from recsys.feature_tables import FeatureTables
from recsys.metrics import FEATURE_EVENTS, FEATURE_LAST_UPDATE, mark_serving
from recsys.rpc.reload import follow_champion, resolve_bundle, wait_for_champion
from recsys.rpc.server import Server
from recsys.v1 import features_pb2 as pb
from recsys.v1 import features_pb2_grpc as pb_grpc

log = logging.getLogger("feature_svc")
MAX_ID_LEN = 512


class FeatureStoreServicer(pb_grpc.FeatureStoreServicer):
    def __init__(self, storage: FeatureStorage, max_batch: int = 10_000):
        self.storage = storage
        self.max_batch = max_batch
        # The in-process store answers in microseconds; a network store must not block the event loop.
        self._inline = isinstance(storage, EmbeddedStorage)

    async def _call(self, fn, *args):
        return fn(*args) if self._inline else await asyncio.to_thread(fn, *args)

    async def _consistent(self, names_fn, read, *args):
        """Records and the feature names they align with, from the same store state: a bulk reload
        between the two reads (another thread) is detected and the read repeated."""
        for _ in range(5):
            before = names_fn()
            records = await self._call(read, *args)
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
        if request.max_history < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_history must be >= 0")
        try:
            names, records = await self._consistent(lambda: self.storage.user_feature_names, self.storage.get_users,
                                                    list(request.user_ids), request.max_history)
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        resp = pb.GetUserFeaturesResponse(feature_names=names)
        for uid, rec in zip(request.user_ids, records, strict=True):
            if rec is None:
                resp.users.add(user_id=uid, found=False)
            else:
                resp.users.add(user_id=uid, found=True, values=rec.values.tolist(), history=rec.history,
                               attributes=rec.attributes)
        return resp

    async def GetItemFeatures(self, request: pb.GetItemFeaturesRequest, context) -> pb.GetItemFeaturesResponse:
        await self._check_ids(request.item_ids, "item_ids", context)
        try:
            names, records = await self._consistent(lambda: self.storage.item_feature_names, self.storage.get_items,
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
                                          category_counts=counts)

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
                                e.timestamp or int(time.time())))
        try:
            n = await self._call(self.storage.record_events, events)
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        FEATURE_EVENTS.inc(n)
        FEATURE_LAST_UPDATE.set(self.storage.last_update())
        return pb.RecordEventsResponse(recorded=n)


def load_bundle_features(storage: FeatureStorage, bundle: Path) -> str:
    """Bulk-load a bundle's feature tables (the storage swaps them in atomically)."""
    meta = verify_bundle(bundle)
    # A shared store (Redis) already holding this bundle is left alone: reloading it would drop the
    # events recorded since, and every replica start would do it again.
    if storage.loaded_bundle() != meta.version:
        storage.load(FeatureTables.load(bundle / "features"))
        storage.mark_loaded_bundle(meta.version)
    mark_serving("feature_svc", meta.version, "features", meta.created)
    FEATURE_LAST_UPDATE.set(storage.last_update())
    return meta.version


async def serve(settings: FeatureSettings, ready: asyncio.Event | None = None) -> None:
    storage = open_storage(settings.storage)
    registry = None
    version = ""
    server = Server(settings.host, settings.port, settings.metrics_port)
    server.add(pb_grpc.add_FeatureStoreServicer_to_server,
               FeatureStoreServicer(storage, settings.max_batch), "recsys.v1.FeatureStore")
    await server.start(serving=False)  # health says NOT_SERVING until the features are loaded
    if settings.bundle or settings.registry:
        bundle, registry = resolve_bundle(settings.bundle, settings.registry, "feature_svc")
        if settings.load_bundle:
            if bundle is None:
                bundle = await wait_for_champion(registry, settings.reload_interval_s, "feature_svc")
            version = await asyncio.to_thread(load_bundle_features, storage, bundle)
            log.info("loaded features of bundle %s into %s", version, settings.storage)
    gc.freeze()  # the loaded model is long-lived: keep the collector from rescanning it (p99)
    await server.set_serving(True)
    if ready is not None:
        ready.set()
    tasks = []
    if registry is not None and settings.load_bundle:
        tasks.append(asyncio.create_task(follow_champion(
            registry, version, settings.reload_interval_s, "feature_svc",
            lambda path: load_bundle_features(storage, path), lambda v, _: None)))
    try:
        await server.serve()
    finally:
        for t in tasks:
            t.cancel()
        storage.close()
