"""The public Feedback servicer: validates a batch of events and appends the valid ones to the event
stream in one atomic, durable append (duplicates by event id are recognised by the stream itself)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc import aio

from recsys.events.codec import encode_event, interactions_by_user, now_ms
from recsys.events.validate import Limits, validate_event
from recsys.metrics import FEEDBACK_EVENTS, STREAM_APPEND_FAILURES
from recsys.stream import EventStream, StreamError
from recsys.v1 import feedback_pb2 as pb
from recsys.v1 import feedback_pb2_grpc as pb_grpc

log = logging.getLogger("ranker_svc.feedback")


_CHUNK = 32  # events checked or encoded between two yields to requests: about 0.3 ms of work
ByUser = dict[str, list[tuple[str, str]]]  # user id -> (event id, item id) of the accepted interactions


class FeedbackServicer(pb_grpc.FeedbackServicer):
    """`on_accepted` sees the newly accepted interactions, per user, after they are durable (the cache
    notes them there, so a list cached before a click never serves the clicked item)."""

    def __init__(self, stream: EventStream, limits: Limits,
                 on_accepted: Callable[[ByUser], Awaitable[None] | None] | None = None, producer: str = "",
                 pace: Callable[[], object] | None = None):
        """`producer` marks the records this process appends (its cache follower skips them). `pace` is called
        in the worker thread before each chunk of events: the server passes its yield to requests
        (recsys.rpc.priority), so a batch is checked and encoded in the gaps between Recommend calls."""
        self.stream = stream
        self.producer = producer
        self.limits = limits
        self.on_accepted = on_accepted
        self.pace = pace or (lambda: None)

    async def Send(self, request: pb.SendRequest, context: aio.ServicerContext) -> pb.SendResponse:
        n = len(request.events)
        if n > self.limits.max_batch:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"events: at most {self.limits.max_batch} per call, got {n}")
        try:  # validation, encoding and the append in a worker thread: a big batch never holds the event loop
            resp, valid, appended, by_user = await asyncio.to_thread(self._validate_and_append, request)
        except StreamError as exc:
            STREAM_APPEND_FAILURES.labels("feedback").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the event stream cannot persist events now; nothing was accepted: {exc}")
        if not valid:
            return resp
        resp.accepted = sum(appended)
        resp.duplicates = len(valid) - resp.accepted
        FEEDBACK_EVENTS.labels("accepted").inc(resp.accepted)
        FEEDBACK_EVENTS.labels("duplicate").inc(resp.duplicates)
        if by_user and self.on_accepted is not None:
            try:
                result = self.on_accepted(by_user)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # the events are durable: a cache hiccup must not fail the call
                log.exception("noting the accepted interactions of %d users failed", len(by_user))
        return resp

    def _validate_and_append(self, request: pb.SendRequest) -> tuple[pb.SendResponse, list, list[bool], ByUser]:
        """In a worker thread: the per-event checks, the records, the one atomic append, and the accepted
        interactions grouped by user (off the event loop too: it walks every event)."""
        resp = pb.SendResponse()
        valid: list[pb.FeedbackEvent] = []
        for i, ev in enumerate(request.events):
            if i % _CHUNK == 0:
                self.pace()
            reason = validate_event(ev, i, self.limits)
            if reason:
                resp.rejected.add(index=i, event_id=ev.event_id[: self.limits.max_event_id], reason=reason)
            else:
                valid.append(ev)
        FEEDBACK_EVENTS.labels("rejected").inc(len(resp.rejected))
        if not valid:
            return resp, valid, [], {}
        at = now_ms()
        records = []
        for start in range(0, len(valid), _CHUNK):
            self.pace()
            records += [(ev.event_id, encode_event(ev, at, self.producer)) for ev in valid[start:start + _CHUNK]]
        appended = self.stream.append(records)
        return resp, valid, appended, interactions_by_user(ev for ev, new in zip(valid, appended, strict=True) if new)
