"""Users/Forget (protos/recsys/v1/users.proto): erase a user everywhere the system keeps them, and record
that it did. docs/operations.md ("Forget a user") lists what is erased where and what is not.

The order matters, each step closing a door the next one leaves open:
1. a receipt in the forgotten-users registry (recsys/forget/), before anything is erased: from now on no
   service loads the user's bundle rows and no export or replay lets their earlier events through;
2. the event stream's entries that name the user, accepted until now, are erased (so no consumer that
   lags behind applies them after step 3);
3. feature_svc's ForgetUser: every live version's store (the replica that answers);
4. this replica's cached lists, last good lists and queued exposures; computations that started before
   (and so may have read the erased features) store nothing and log no exposure;
5. a forget record on the event stream: every consumer (each embedded feature store, each ranker's
   follower) erases the user at that point of the stream, also on replicas this call never reaches, and
   again after anything a consumer applied in between (it also skips their events from before it);
6. the exposures topic's entries naming the user, until now;
7. the receipt again, with the counts, and a log line (the user's digest, never the id).
Every step is idempotent: a call that fails halfway (UNAVAILABLE) is simply repeated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from ranker_svc.cached import CachedLists
from ranker_svc.degraded import DegradedAnswers
from ranker_svc.exposures import ExposureLog
from recsys.cache import CacheUnavailable
from recsys.events.codec import now_ms
from recsys.events.forget import encode_forget, redactor
from recsys.forget import Tombstone, Tombstones, TombstonesUnavailable, user_digest
from recsys.rpc.auth import current_caller
from recsys.rpc.remote import Channels
from recsys.rpc.request_id import bind as bind_request_id
from recsys.rpc.request_id import outgoing_metadata
from recsys.stream import EventStream, StreamError
from recsys.v1 import features_pb2, users_pb2, users_pb2_grpc

log = logging.getLogger("ranker_svc.forget")
FORGET_METHOD = "/recsys.v1.Users/Forget"
_DEFAULT_TIMEOUT_S = 300.0  # without a caller's deadline: redacting a long stream takes a while
NOTES = ("other replicas erase their in-process copies when they read the forget record from the stream",
         "bundles already trained keep the user's rows until the next retraining; no service loads them again")


class Failed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class UsersServicer(users_pb2_grpc.UsersServicer):
    def __init__(self, stream: EventStream, tombstones: Tombstones, channels: Channels, degraded: DegradedAnswers,
                 lists: CachedLists | None = None, exposures: ExposureLog | None = None,
                 exposure_stream: EventStream | None = None, producer: str = "", max_id_len: int = 512):
        self.stream = stream
        self.tombstones = tombstones
        self.channels = channels
        self.degraded = degraded
        self.lists = lists
        self.exposures = exposures
        self.exposure_stream = exposure_stream
        self.producer = producer
        self.max_id_len = max_id_len

    def forget_here(self, user_id: str) -> dict[str, int]:
        """What this replica holds in its own memory (any thread): the follower calls it for forget records
        of other replicas. A shared (Redis) cache was erased by the replica that took the call."""
        erased = {"degraded.lists": self.degraded.forget(user_id)}
        if self.exposures is not None:
            erased["exposures.queued"] = self.exposures.forget(user_id)
        if self.lists is not None and getattr(self.lists.cache, "in_process", False):
            erased["cache.lists"] = self.lists.forget_now(user_id)
        return erased

    async def Forget(self, request: users_pb2.ForgetRequest, context: aio.ServicerContext) -> users_pb2.ForgetResponse:
        user = request.user_id
        if not user:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be non-empty")
        if len(user) > self.max_id_len:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"user_id must be at most {self.max_id_len} characters, got {len(user)}")
        caller = current_caller()
        receipt = Tombstone(uuid.uuid4().hex, user_digest(user), now_ms(), caller.name if caller else "")
        bind_request_id(f"forget-{receipt.receipt}")  # the internal calls and their logs carry the receipt
        remaining = context.time_remaining()
        timeout = _DEFAULT_TIMEOUT_S if remaining is None else max(0.001, remaining)
        try:
            erased, notes = await self._forget(user, receipt, timeout)
        except Failed as exc:
            log.warning("forget receipt=%s user_sha256=%s caller=%s failed: %s", receipt.receipt, receipt.digest,
                        receipt.caller or "-", exc)
            await context.abort(exc.code, str(exc))
        log.info("forgot a user: receipt=%s user_sha256=%s caller=%s erased=%s", receipt.receipt, receipt.digest,
                 receipt.caller or "-", ",".join(f"{k}={v}" for k, v in sorted(erased.items())))
        at = Timestamp()
        at.FromMilliseconds(receipt.at_ms)
        return users_pb2.ForgetResponse(receipt_id=receipt.receipt, forgotten_at=at, erased=erased,
                                        user_sha256=receipt.digest, notes=notes)

    async def _forget(self, user: str, receipt: Tombstone, timeout: float) -> tuple[dict[str, int], list[str]]:
        erased: dict[str, int] = {}
        notes = list(NOTES)
        done_before = "; retry: every step is safe to repeat"
        try:
            await asyncio.to_thread(self.tombstones.record, receipt)
        except TombstonesUnavailable as exc:
            raise Failed(grpc.StatusCode.UNAVAILABLE, f"nothing was erased: {exc}") from exc
        try:
            events = await asyncio.to_thread(self.stream.redact, redactor(user, receipt.at_ms))
        except StreamError as exc:
            raise Failed(grpc.StatusCode.UNAVAILABLE, f"the event stream failed ({exc}){done_before}") from exc
        erased["stream.events"], erased["stream.dead_letters"] = events.entries, events.dead_letters
        failed = None
        try:
            resp = await self.channels.features.ForgetUser(features_pb2.ForgetUserRequest(user_id=user),
                                                           timeout=timeout, metadata=outgoing_metadata())
            erased["features.records"], erased["features.history_items"] = resp.records, resp.history_items
        except grpc.RpcError as exc:
            failed = Failed(grpc.StatusCode.UNAVAILABLE, f"feature_svc could not erase the user "
                                                         f"({exc.code().name}: {exc.details()}); its stream consumers "
                                                         f"will{done_before}")
        erased |= self.forget_here(user)
        if self.lists is not None and not getattr(self.lists.cache, "in_process", False):
            try:
                erased["cache.lists"] = await self.lists.forget(user)
            except CacheUnavailable as exc:
                failed = failed or Failed(grpc.StatusCode.UNAVAILABLE, f"the list cache failed ({exc}){done_before}")
        record = encode_forget(user, receipt.receipt, receipt.caller, receipt.at_ms, self.producer)
        try:  # last: the counts above are what this call erased, not what a consumer (ours too) beat it to
            await asyncio.to_thread(self.stream.append, [(f"forget/{receipt.receipt}", record)])
        except StreamError as exc:
            raise Failed(grpc.StatusCode.UNAVAILABLE, f"the event stream failed ({exc}){done_before}") from exc
        if failed is not None:
            raise failed
        if self.exposure_stream is not None:
            try:  # until now: exposures queued before step 4 are dropped by the writer instead
                shown = await asyncio.to_thread(self.exposure_stream.redact, redactor(user, now_ms()))
            except StreamError as exc:
                raise Failed(grpc.StatusCode.UNAVAILABLE, f"the exposures stream failed ({exc}){done_before}") \
                    from exc
            erased["stream.exposures"] = shown.entries
            erased["stream.dead_letters"] += shown.dead_letters
        try:
            await asyncio.to_thread(self.tombstones.record, dataclasses.replace(receipt, erased=erased, done=True))
        except TombstonesUnavailable as exc:  # everything is erased; only the counts are not recorded
            notes.append(f"the receipt's counts could not be recorded: {exc}")
        return erased, notes
