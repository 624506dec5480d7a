"""The FeatureStore gRPC servicer: batch reads of user and item features, and event ingestion, for every live
model version (one storage per version: its own namespace in a shared store)."""

from __future__ import annotations

import asyncio
import logging
import time
from itertools import chain
from pathlib import Path

import grpc
import numpy as np
from grpc import aio

from feature_svc.settings import FeatureSettings
from recsys.bundle import bundle_stream_position, verify_bundle
from recsys.events.apply import FeatureApplier
from recsys.events.consumers import VersionConsumers
from recsys.forget import Forgotten, TombstonesUnavailable, open_tombstones
from recsys.metrics import FEATURE_EVENTS, FEATURE_LAST_UPDATE
from recsys.rpc.admission import DEFAULT_MAX_MESSAGE_BYTES, ServerLimits
from recsys.rpc.health_watch import follow_health
from recsys.rpc.host import Component, Loaded, ServiceHost, VersionsServicer
from recsys.rpc.limits import CallLimit, ResponseBudget, chunks, strings_size
from recsys.rpc.priority import IN_FLIGHT
from recsys.rpc.security import security_from
from recsys.rpc.versions import LiveVersions, UnknownVersion
from recsys.storage import (
    DEFAULT_NAMESPACE,
    Erased,
    Event,
    FeatureStorage,
    ItemColumns,
    ReadRaced,
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
# Records read and answered between two deadline checks (recsys/rpc/limits.py): a few milliseconds of work.
USER_CHUNK = 64
ITEM_CHUNK = 1024  # a Recommend asks for its candidates and recent history: 550 items at 500 candidates, one slice
# Events applied between two yields to requests: about 0.3 ms of work, so a request arriving mid-slice
# waits little for the interpreter lock.
CONSUMER_SLICE = 16
UNVERSIONED = ""  # a store started without a bundle or registry: it has no version and answers every one


class FeatureStoreServicer(pb_grpc.FeatureStoreServicer):
    def __init__(self, max_batch: int = 10_000, on_change=None, max_id_len: int = MAX_ID_LEN,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.max_batch = max_batch
        self.max_id_len = max_id_len
        self.max_message_bytes = max_message_bytes  # an answer is never built beyond what can be sent
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
        if not ids or (all(ids) and max(map(len, ids)) <= self.max_id_len):  # the common case, checked in C
            return
        for i, x in enumerate(ids):
            if not x or len(x) > self.max_id_len:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{field_name}[{i}] must be a non-empty id of at most {self.max_id_len} characters")

    async def GetUserFeatures(self, request: pb.GetUserFeaturesRequest, context) -> pb.GetUserFeaturesResponse:
        await self._check_ids(request.user_ids, "user_ids", context)
        if request.history_limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "history_limit must be >= 0")
        version, storage = await self._storage(request.model_version, context)
        try:
            return await self._users(storage, version, list(request.user_ids), request.history_limit, context)
        except CallLimit as exc:
            await context.abort(exc.code, str(exc))
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")

    async def _users(self, storage: FeatureStorage, version: str, ids: list[str], history_limit: int,
                     context) -> pb.GetUserFeaturesResponse:
        """The answer, read and built a chunk at a time: it stops when the deadline passes or the answer
        outgrows max_message_bytes (CallLimit), not after building gigabytes nobody will read."""
        resp = pb.GetUserFeaturesResponse(model_version=version)
        budget = ResponseBudget(self.max_message_bytes, "the answer (user_ids x their histories)")
        names, done = None, 0
        async for chunk in chunks(ids, USER_CHUNK, context):
            chunk_names, records = await self._consistent(storage, lambda: storage.user_feature_names,
                                                          storage.get_users, list(chunk), history_limit)
            if names is not None and chunk_names != names:
                raise StorageError("the features were reloaded during the read; retry")
            names = chunk_names
            for uid, rec in zip(chunk, records, strict=True):
                done += 1
                if rec is None:
                    budget.spend(len(uid) + 8, done, len(ids))
                    resp.users.add(user_id=uid, found=False)
                    continue
                budget.spend(len(uid) + 5 * len(rec.values) + strings_size(rec.history)
                             + strings_size(rec.attributes) + strings_size(rec.attributes.values()) + 8, done, len(ids))
                resp.users.add(user_id=uid, found=True, values=rec.values.tolist(), history=rec.history,
                               attributes=rec.attributes)
        resp.feature_names.extend(storage.user_feature_names if names is None else names)
        return resp

    async def GetItemFeatures(self, request: pb.GetItemFeaturesRequest, context) -> pb.GetItemFeaturesResponse:
        await self._check_ids(request.item_ids, "item_ids", context)
        version, storage = await self._storage(request.model_version, context)
        try:
            return await self._items(storage, version, list(request.item_ids), context, request.packed)
        except CallLimit as exc:
            await context.abort(exc.code, str(exc))
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")

    async def _item_columns(self, storage: FeatureStorage, ids: list[str]) -> tuple[list[str], ItemColumns]:
        """Like _consistent, for a columnar item read."""
        for _ in range(5):
            before = storage.item_feature_names
            try:
                cols = await self._call(storage, storage.get_item_columns, ids)
            except ReadRaced:
                continue
            if storage.item_feature_names == before and cols.values.shape[1] == len(before):
                return before, cols
        raise StorageError("the feature store kept reloading during the read")

    async def _items(self, storage: FeatureStorage, version: str, ids: list[str], context,
                     packed: bool = False) -> pb.GetItemFeaturesResponse:
        """Like _users: a chunk at a time, within the deadline and max_message_bytes; each chunk is read and
        charged as columns (no Python object per item or per number on the way to the wire)."""
        budget = ResponseBudget(self.max_message_bytes, "the answer (item_ids x their features)")
        names: list[str] | None = None
        done = 0
        found: list[bool] = []
        values: list[np.ndarray] = []
        titles: list[str] = []
        categories: list[str] = []
        counts: list[int] = []
        async for chunk in chunks(ids, ITEM_CHUNK, context):
            chunk_names, cols = await self._item_columns(storage, list(chunk))
            if names is not None and chunk_names != names:
                raise StorageError("the features were reloaded during the read; retry")
            names = chunk_names
            n = len(chunk)
            n_cats = np.fromiter(map(len, cols.categories), dtype=np.int64, count=n)
            flat_cats = list(chain.from_iterable(cols.categories))
            # the size of each entry as _users counts it: id, numbers, title and categories (found items);
            # the categories' characters summed per item in one pass (a loop per item was a third of the call)
            cat_chars = np.bincount(np.repeat(np.arange(n), n_cats), minlength=n,
                                    weights=np.fromiter(map(len, flat_cats), dtype=np.int64, count=len(flat_cats)))
            sizes = (np.fromiter(map(len, chunk), dtype=np.int64, count=n) + 5 * len(names) + 8
                     + cols.found * (np.fromiter(map(len, cols.titles), dtype=np.int64, count=n)
                                     + cat_chars.astype(np.int64) + 3 * n_cats))
            budget.spend_many(sizes, done, len(ids))
            done += n
            found.extend(cols.found.tolist())
            values.append(cols.values.ravel())
            titles.extend(cols.titles)
            categories.extend(flat_cats)
            counts.extend(n_cats.tolist())
        names = storage.item_feature_names if names is None else names
        flat = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
        if packed:
            return pb.GetItemFeaturesResponse(feature_names=names, found=found, titles=titles, categories=categories,
                                              category_counts=counts, model_version=version,
                                              values_le32=flat.astype("<f4", copy=False).tobytes())
        return pb.GetItemFeaturesResponse(feature_names=names, item_ids=ids, found=found, values=flat.tolist(),
                                          titles=titles, categories=categories, category_counts=counts,
                                          model_version=version)

    async def RecordEvents(self, request: pb.RecordEventsRequest, context) -> pb.RecordEventsResponse:
        if len(request.events) > self.max_batch:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"events: at most {self.max_batch} per call, got {len(request.events)}")
        events = []
        for i, e in enumerate(request.events):
            for name in ("user_id", "item_id"):
                value = getattr(e, name)
                if not value or len(value) > self.max_id_len:
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

    async def ForgetUser(self, request: pb.ForgetUserRequest, context) -> pb.ForgetUserResponse:
        """Users/Forget: the user erased from every live version's store (the other replicas of an embedded
        store hear the stream's forget record; docs/operations.md, "Forget a user")."""
        if not request.user_id or len(request.user_id) > self.max_id_len:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"user_id must be a non-empty id of at most {self.max_id_len} characters")
        if not len(self.versions):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "feature_svc has no features loaded yet")
        erased, versions = Erased(), self.versions.versions()
        try:
            for version in versions:
                erased += await asyncio.to_thread(self.versions.get(version)[1].forget_users, [request.user_id])
        except StorageError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"feature storage unavailable: {exc}")
        return pb.ForgetUserResponse(records=erased.records, history_items=erased.history_items,
                                     versions=len(versions))


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
        storage.forgotten = _forgotten(settings)  # kept out of the load and of the stream's replay
        if settings.load_bundle:
            load_bundle_features(storage, bundle, storage.forgotten)
            log.info("loaded features of bundle %s into %s", meta.version, settings.storage)
        elif storage.loaded_bundle() != meta.version:
            raise StorageError(f"the store does not hold the features of {meta.version} yet "
                               f"(run `recsys features load --bundle {bundle}`)")
        FEATURE_LAST_UPDATE.set(storage.last_update())
    except BaseException:
        storage.close()
        raise
    return Loaded(meta.version, meta.created, storage)


def _forgotten(settings: FeatureSettings) -> Forgotten:
    """The forgotten-users registry beside the stream; unreadable, no version loads (retried next poll)."""
    try:
        with open_tombstones(settings.stream) as registry:
            return registry.forgotten()
    except TombstonesUnavailable as exc:
        raise StorageError(str(exc)) from exc


def feature_consumers(settings: FeatureSettings) -> VersionConsumers[FeatureStorage]:
    """The online-features consumer of every live version: events on the stream become history,
    counters, new items and user attributes in that version's store."""
    return VersionConsumers(
        open_stream(settings.stream), "features",
        handler=lambda group, storage: FeatureApplier(storage, group, getattr(storage, "forgotten", None)),
        start=lambda version, storage: getattr(storage, "stream_start", "begin"),
        replay=lambda storage: storage.in_process, batch=settings.consumer_batch,
        interval_s=settings.consumer_interval_s,
        pace=IN_FLIGHT.yield_to_requests, slice_size=CONSUMER_SLICE)


def _storage_answers(servicer: FeatureStoreServicer) -> bool:
    """The default version's storage answers (an embedded store always does)."""
    try:
        return bool(servicer.versions.get("")[1].ping())
    except Exception:
        return False


async def serve(settings: FeatureSettings, ready: asyncio.Event | None = None) -> None:
    security = security_from(settings, "feature_svc")  # TLS unless plaintext; bad settings stop here
    consumers = feature_consumers(settings)
    servicer = FeatureStoreServicer(settings.max_batch, on_change=consumers.sync, max_id_len=settings.max_id_len,
                                    max_message_bytes=settings.max_message_bytes)
    host = ServiceHost("feature_svc", settings.host, settings.port, settings.metrics_port, security,
                       ServerLimits.of(settings))
    host.add(pb_grpc.add_FeatureStoreServicer_to_server, servicer, "recsys.v1.FeatureStore")
    component = None
    if settings.bundle or settings.registry:
        component = Component("feature_svc", lambda path: load_version(path, settings), servicer.versions)
    else:
        servicer.versions.add(UNVERSIONED, _open(settings))
        host.add(versions_pb2_grpc.add_ModelVersionsServicer_to_server,
                 VersionsServicer("feature_svc", servicer.versions), "recsys.v1.ModelVersions")
    started = ready or asyncio.Event()
    watch = asyncio.get_running_loop().create_task(
        follow_health(host.server, lambda: _storage_answers(servicer), "feature storage", started))
    try:
        await host.run(component, settings.bundle, settings.registry, settings.reload_interval_s,
                       settings.default_version, started)
    finally:
        watch.cancel()
        consumers.close()
        for version in servicer.versions.versions():
            _close(servicer.versions.get(version)[1])
