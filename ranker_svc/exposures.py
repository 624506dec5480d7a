"""The exposure log: every Recommend response appended to the event stream as an impression, off the
request's critical path. The record's time is the request's (context.time, like an event's timestamp),
else when it was answered. A request only does a bounded, non-blocking enqueue; the record is encoded on
the event loop right after the handler returns (while the response is on its way), and a background task
appends batches; when the queue is full or the stream fails, exposures are dropped and counted, never
waited for."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
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
# Records encoded by one loop callback (about 0.9 ms); more wait for the next turn of the loop, behind the
# requests that are ready, so a burst of answers finishing together never holds the loop for long.
_ENCODE_SLICE = 32
_FORGET_WINDOW_S = 60.0  # a forget outlives every exposure queued before it (the queue drains in ms)


class ExposureLog:
    def __init__(self, stream: EventStream, capacity: int = 10_000, pace: Callable[[], object] | None = None):
        """`pace` is called (in the writer's thread) before each append: the server passes its yield to
        requests (recsys.rpc.priority), so exposures are written in the gaps between requests."""
        self.stream = stream
        self.capacity = capacity
        self.pace = pace or (lambda: None)
        # Answered, not encoded yet: (request, response, answered at ms, shadow, started: perf_counter() when
        # its computation began). Encoding (about 30 us a record) runs in a loop callback, not in the writer's
        # thread: a thread holding the interpreter lock for a chunk of encoding made a request that arrived
        # meanwhile wait for a forced switch, which was most of the exposure log's cost at a cache hit's p99.
        self._pending: list[tuple[rpb.RecommendRequest, rpb.RecommendResponse, int, bool, float]] = []
        self._encoding = False
        self._queue: collections.deque[tuple[str, float, bytes]] = collections.deque()  # (user, started, record)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_error = 0.0
        # user -> when forgotten (perf_counter): exposures of computations started before are never written
        self._forgotten: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._forget_lock = threading.Lock()
        for reason in ("queue_full", "stream_error"):  # exported at 0, so the first drop is an increase
            EXPOSURES_DROPPED.labels(reason)

    def record(self, request: rpb.RecommendRequest, response: rpb.RecommendResponse, shadow: bool = False,
               started: float | None = None) -> None:
        """O(1) and never blocks (on the event loop's thread): the record is encoded by a callback that runs
        after the handler has returned. A shadow's answer is logged with `shadow` set: it was never shown.
        `started` (time.perf_counter()) is when the answer's computation began: if the user is forgotten
        after that, the exposure is not written."""
        if len(self._queue) + len(self._pending) >= self.capacity:
            EXPOSURES_DROPPED.labels("queue_full").inc()
            return
        self._pending.append((request, response, now_ms(), shadow,
                              time.perf_counter() if started is None else started))
        if not self._encoding:
            self._encoding = True
            asyncio.get_running_loop().call_soon(self._encode_pending)

    def _encode_pending(self, everything: bool = False) -> None:
        n = len(self._pending) if everything else _ENCODE_SLICE
        pending, self._pending = self._pending[:n], self._pending[n:]
        self._queue.extend((req.user_id, started, encode_exposure(_exposure(req, resp, shadow), at, _request_ms(req)))
                           for req, resp, at, shadow, started in pending)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._encode_pending)
        else:
            self._encoding = False
        self._wake.set()

    def forget(self, user_id: str) -> int:
        """Users/Forget: the user's queued exposures are dropped at write time (any thread may call this:
        it only records the time); returns how many are queued now."""
        at = time.perf_counter()
        with self._forget_lock:  # the Forget handler and the stream follower's thread
            self._forgotten.pop(user_id, None)
            self._forgotten[user_id] = at
            while next(iter(self._forgotten.values())) < at - _FORGET_WINDOW_S:  # the newest always stays
                self._forgotten.popitem(last=False)
        return sum(1 for user, *_ in list(self._queue) if user == user_id) + \
            sum(1 for req, *_ in list(self._pending) if req.user_id == user_id)

    def _written(self, user_id: str, started: float) -> bool:
        forgotten_at = self._forgotten.get(user_id) if self._forgotten else None
        return forgotten_at is None or started > forgotten_at

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (bounded in time), then stop."""
        if self._task is None:
            return
        if self._pending:
            self._encode_pending(everything=True)
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

    def _write(self, batch: list[tuple[str, float, bytes]]) -> None:
        """In a worker thread, between requests: one append of the records whose users were not forgotten."""
        records = [(None, data) for user_id, started, data in batch if self._written(user_id, started)]
        self.pace()
        if records:
            self.stream.append(records)


def _request_ms(req: rpb.RecommendRequest) -> int:
    return req.context.time.ToMilliseconds() if req.context.HasField("time") else 0


def _exposure(req: rpb.RecommendRequest, resp: rpb.RecommendResponse, shadow: bool = False) -> spb.Exposure:
    return spb.Exposure(
        request_id=resp.request_id, user_id=req.user_id, model_version=resp.model_version, cached=resp.cached,
        surface=req.context.surface, device=req.context.device,
        items=[spb.ExposedItem(item_id=it.item_id, position=i, score=it.score) for i, it in enumerate(resp.items)],
        assignments=resp.assignments, shadow=shadow)
