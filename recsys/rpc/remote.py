"""The pipeline's feature and candidate sources over gRPC, with per-call deadlines and clear errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np
from grpc import aio

from recsys.pipeline.types import CandidateList, ItemBatch, UserView
from recsys.rpc.request_id import outgoing_metadata
from recsys.rpc.retry import INTERNAL_SERVICES, retry_options
from recsys.rpc.tls import ChannelCertificates
from recsys.rpc.tracing import client_span
from recsys.v1 import (
    candidates_pb2,
    candidates_pb2_grpc,
    features_pb2,
    features_pb2_grpc,
    versions_pb2,
    versions_pb2_grpc,
)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    # Retry UNAVAILABLE within each call's deadline, under a retry budget (recsys/rpc/retry.py).
    *retry_options(INTERNAL_SERVICES),
    # With a headless Service (`dns:///name:port`) spread calls over every resolved pod.
    ("grpc.lb_policy_name", "round_robin"),
    # Reconnect quickly after a dependency restarts: gRPC's default backoff (1 s growing to 120 s) kept
    # the ranker failing for 11.5 s after a 60 s outage; capped at 1 s, normal answers resume within ~1 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class DependencyError(Exception):
    """A downstream service call failed; carries the status to return to our caller."""

    def __init__(self, service: str, address: str, exc: grpc.RpcError):
        self.service = service
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
        elif code == grpc.StatusCode.FAILED_PRECONDITION:  # the dependency does not hold the version
            self.code = grpc.StatusCode.FAILED_PRECONDITION
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED):
            self.code = grpc.StatusCode.UNAVAILABLE  # RESOURCE_EXHAUSTED: the dependency shed the call
        elif code == grpc.StatusCode.INVALID_ARGUMENT:  # a request part beyond the dependency's own limits
            self.code = grpc.StatusCode.INVALID_ARGUMENT
        else:
            self.code = grpc.StatusCode.INTERNAL
        super().__init__(f"{service} at {address}: {code.name}: {exc.details()}")


class Channels:
    """Long-lived channels to the two dependencies, shared by all requests."""

    def __init__(self, feature_addr: str, candidate_addr: str, tls: ChannelCertificates | None = None):
        self.feature_addr = feature_addr
        self.candidate_addr = candidate_addr
        self.tls = tls  # mutual TLS with the service's own certificate; None: plaintext
        self._connect()
        # New certificate files (a rotated Secret): new channels for new calls (recsys/rpc/tls.py).
        self._tls_task = asyncio.get_running_loop().create_task(tls.follow(self._reconnect)) if tls else None

    def _channel(self, address: str) -> aio.Channel:
        if self.tls is None:
            return aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return aio.secure_channel(address, self.tls.credentials, options=CHANNEL_OPTIONS)

    def _connect(self) -> None:
        self._fch = self._channel(self.feature_addr)
        self._cch = self._channel(self.candidate_addr)
        self.features = features_pb2_grpc.FeatureStoreStub(self._fch)
        self.candidates = candidates_pb2_grpc.CandidateRetrieverStub(self._cch)

    async def _reconnect(self) -> None:
        """Calls in flight finish on the old channels (closed after them, 30 s at most)."""
        old = (self._fch, self._cch)
        self._connect()
        await asyncio.gather(*(ch.close(grace=30.0) for ch in old))

    async def hold(self, version: str) -> bool:
        """Whether both dependencies hold `version` now (a new champion becomes the ranker's default only
        then, so no request pinned by default to it reaches a service that still lacks it)."""
        for channel in (self._fch, self._cch):
            try:
                resp = await versions_pb2_grpc.ModelVersionsStub(channel).List(
                    versions_pb2.ListVersionsRequest(), timeout=2.0)
            except grpc.RpcError:
                return False
            if version not in resp.versions and list(resp.versions) != [""]:
                return False
        return True

    async def close(self) -> None:
        if self._tls_task is not None:
            self._tls_task.cancel()
        await self._fch.close()
        await self._cch.close()


class RemoteFeatureSource:
    def __init__(self, ch: Channels, timeout: Callable[[], float]):
        self.ch = ch
        self.timeout = timeout

    async def get_user(self, user_id: str, history_limit: int, version: str = "") -> UserView:
        try:
            with client_span("/recsys.v1.FeatureStore/GetUserFeatures"):
                resp = await self.ch.features.GetUserFeatures(
                    features_pb2.GetUserFeaturesRequest(user_ids=[user_id], history_limit=history_limit,
                                                        model_version=version),
                    timeout=self.timeout(), metadata=outgoing_metadata())
        except grpc.RpcError as exc:
            raise DependencyError("feature_svc", self.ch.feature_addr, exc) from exc
        u = resp.users[0]
        names = list(resp.feature_names)
        values = np.asarray(u.values, dtype=np.float32) if u.found else np.full(len(names), np.nan, np.float32)
        return UserView(user_id, u.found, names, values, list(u.history), dict(u.attributes))

    async def get_items(self, item_ids: list[str], version: str = "") -> tuple[list[str], ItemBatch]:
        try:
            with client_span("/recsys.v1.FeatureStore/GetItemFeatures"):
                resp = await self.ch.features.GetItemFeatures(
                    features_pb2.GetItemFeaturesRequest(item_ids=item_ids, model_version=version, packed=True),
                    timeout=self.timeout(), metadata=outgoing_metadata())
        except grpc.RpcError as exc:
            raise DependencyError("feature_svc", self.ch.feature_addr, exc) from exc
        return item_views(resp, item_ids)


def item_views(resp: features_pb2.GetItemFeaturesResponse, item_ids: list[str]) -> tuple[list[str], ItemBatch]:
    """(feature names, a view per requested item) from either form of the answer: the packed one
    (values as float32 bytes, ids not echoed) or the plain one a server before `packed` sends."""
    names = list(resp.feature_names)
    if resp.item_ids:
        if len(resp.item_ids) != len(item_ids):
            raise ValueError(f"feature_svc answered {len(resp.item_ids)} items for {len(item_ids)} asked")
        item_ids = list(resp.item_ids)
    n = len(item_ids)
    values = float32_matrix(resp.values_le32, resp.values, n, len(names), "feature_svc", "feature value")
    found = np.fromiter(resp.found, dtype=bool, count=len(resp.found))
    bounds = np.concatenate([[0], np.cumsum(np.asarray(resp.category_counts, dtype=np.int64))]).tolist()
    cats = list(resp.categories)
    views = ItemBatch(item_ids, found, values, [cats[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                      list(resp.titles))
    return names, views


class RemoteCandidateSource:
    def __init__(self, ch: Channels, timeout: Callable[[], float]):
        self.ch = ch
        self.timeout = timeout

    async def retrieve(self, user_id: str, history: list[str], exclude: list[str], n: int,
                       attributes: dict[str, str], include_seen: bool, version: str = "",
                       quotas: dict[str, float] | None = None) -> CandidateList:
        req = candidates_pb2.RetrieveRequest(user_id=user_id, history=history, exclude_item_ids=exclude, n=n,
                                             user_attributes=attributes, include_seen=include_seen,
                                             model_version=version, source_quotas=quotas or {}, packed=True)
        try:
            with client_span("/recsys.v1.CandidateRetriever/Retrieve"):
                resp = await self.ch.candidates.Retrieve(req, timeout=self.timeout(), metadata=outgoing_metadata())
        except grpc.RpcError as exc:
            raise DependencyError("candidate_svc", self.ch.candidate_addr, exc) from exc
        names = list(resp.score_names)
        scores = retrieved_scores(resp, len(names))
        return CandidateList(item_ids=list(resp.item_ids), score_names=names, scores=scores,
                             source_masks=np.asarray(resp.source_masks, dtype=np.uint64),
                             source_vocab=list(resp.source_names), model_version=resp.model_version,
                             relative_score_names=list(resp.relative_score_names),
                             fresh_rows=np.asarray(resp.fresh_rows, dtype=np.int64))


def retrieved_scores(resp: candidates_pb2.RetrieveResponse, n_names: int) -> np.ndarray:
    """The [items x score names] float32 matrix of either form of the answer (packed bytes or plain floats)."""
    return float32_matrix(resp.scores_le32, resp.scores, len(resp.item_ids), n_names, "candidate_svc", "score")


def float32_matrix(packed: bytes, plain, rows: int, cols: int, service: str, what: str) -> np.ndarray:
    """A row-major [rows x cols] float32 matrix sent either packed (little-endian float32 bytes) or as a
    repeated float field; a size that does not match is a ValueError naming the sender."""
    if packed:
        if len(packed) != 4 * rows * cols:
            raise ValueError(f"{service} answered {len(packed)} {what} bytes for {rows} x {cols}")
        return np.frombuffer(packed, dtype="<f4").astype(np.float32).reshape(rows, cols)
    if len(plain) != rows * cols:
        raise ValueError(f"{service} answered {len(plain)} {what}s for {rows} x {cols}")
    return np.asarray(plain, dtype=np.float32).reshape(rows, cols)
