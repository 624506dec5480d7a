"""The exposure log: every Recommend response appended to the event stream as an impression, off the
request's critical path. The record's time is the request's (context.time, like an event's timestamp),
else when it was answered. A request only does a bounded, non-blocking enqueue; a background task writes
batches; when the queue is full or the stream fails, exposures are dropped and counted, never waited for."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from recsys.events.codec import encode_exposure, now_ms
from recsys.metrics import EXPOSURES, EXPOSURES_DROPPED, STREAM_APPEND_FAILURES
from recsys.stream import EventStream, StreamError
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb

log = logging.getLogger("ranker_svc.exposures")
_BATCH = 500
# How long the writer lets exposures accumulate before an append: one append (and one fsync) per
# batch instead of per request, which is what keeps the log off the request path's CPU budget.
_LINGER_S = 0.1
_ENCODE_CHUNK = 16  # records encoded between two yields to requests: about 0.3 ms of work


class ExposureLog:
    def __init__(self, stream: EventStream, capacity: int = 10_000, pace: Callable[[], object] | None = None):
        """`pace` is called (in the writer's thread) before each chunk of work: the server passes its
        yield to requests (recsys.rpc.priority), so exposures are written in the gaps between requests."""
        self.stream = stream
        self.capacity = capacity
        self.pace = pace or (lambda: None)
        self._queue: collections.deque[tuple[rpb.RecommendRequest, rpb.RecommendResponse, int, bool]] = \
            collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_error = 0.0
        for reason in ("queue_full", "stream_error"):  # exported at 0, so the first drop is an increase
            EXPOSURES_DROPPED.labels(reason)

    def record(self, request: rpb.RecommendRequest, response: rpb.RecommendResponse, shadow: bool = False) -> None:
        """O(1) and never blocks: the message is built by the writer task, not here. A shadow's answer is
        logged with `shadow` set: it was never shown."""
        if len(self._queue) >= self.capacity:
            EXPOSURES_DROPPED.labels("queue_full").inc()
            return
        self._queue.append((request, response, now_ms(), shadow))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (bounded in time), then stop."""
        if self._task is None:
            return
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._queue:
            EXPOSURES_DROPPED.labels("stream_error").inc(len(self._queue))
            self._queue.clear()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if len(self._queue) < _BATCH:
                await asyncio.sleep(_LINGER_S)
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            try:
                await asyncio.to_thread(self._write, batch)
                EXPOSURES.inc(len(batch))
            except StreamError as exc:
                EXPOSURES_DROPPED.labels("stream_error").inc(len(batch))
                STREAM_APPEND_FAILURES.labels("exposures").inc()
                if time.monotonic() - self._last_error > 10:  # one line per 10 s, not one per batch
                    log.warning("exposures dropped: the event stream is unavailable: %s", exc)
                    self._last_error = time.monotonic()
                await asyncio.sleep(0.2)

    def _write(self, batch: list[tuple[rpb.RecommendRequest, rpb.RecommendResponse, int, bool]]) -> None:
        """In a worker thread, chunk by chunk between requests: the messages, then one append."""
        records: list[tuple[None, bytes]] = []
        for start in range(0, len(batch), _ENCODE_CHUNK):
            self.pace()
            records += [(None, encode_exposure(_exposure(req, resp, shadow), at, _request_ms(req)))
                        for req, resp, at, shadow in batch[start:start + _ENCODE_CHUNK]]
        self.pace()
        self.stream.append(records)


def _request_ms(req: rpb.RecommendRequest) -> int:
    return req.context.time.ToMilliseconds() if req.context.HasField("time") else 0


def _exposure(req: rpb.RecommendRequest, resp: rpb.RecommendResponse, shadow: bool = False) -> spb.Exposure:
    return spb.Exposure(
        request_id=resp.request_id, user_id=req.user_id, model_version=resp.model_version, cached=resp.cached,
        surface=req.context.surface, device=req.context.device,
        items=[spb.ExposedItem(item_id=it.item_id, position=i, score=it.score) for i, it in enumerate(resp.items)],
        assignments=resp.assignments, shadow=shadow)
