"""Reads before writes inside one serving process.

A service's stream consumers run in threads of the process that serves requests, and Python runs one
thread at a time: a consumer thread in the middle of a batch makes a request wait for the interpreter
lock at every switch, which is how a steady event stream raised Recommend's p99 by half. So the gRPC
server counts the calls in flight (reads: the write calls of WRITE_METHODS yield like background work),
and a background writer, or a write call's worker, asks `yield_to_requests()` before each small
slice of its work: it waits until no call is in flight, but never longer than `max_wait_s`, so under a
continuous request load writes still take about slice / (slice + max_wait) of the process and the
event-to-visible latency stays bounded (docs/feedback-loop.md).
"""

from __future__ import annotations

import threading

DEFAULT_MAX_WAIT_S = 0.005
# Calls that write: they yield to reads like the background writers do, so they are not counted as calls
# in flight (a Send counted there would make its own worker wait for itself).
WRITE_METHODS = frozenset({"/recsys.v1.Feedback/Send", "/recsys.v1.FeatureStore/RecordEvents"})


class InFlight:
    """Calls in flight in this process; entered and left on the server's event loop thread."""

    def __init__(self) -> None:
        self._n = 0
        self._idle = threading.Event()
        self._idle.set()

    def enter(self) -> None:
        self._n += 1
        self._idle.clear()

    def leave(self) -> None:
        self._n -= 1
        if self._n <= 0:
            self._n = 0
            self._idle.set()

    @property
    def count(self) -> int:
        return self._n

    def yield_to_requests(self, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> bool:
        """Block (a background thread only) until no call is in flight or `max_wait_s` has passed;
        True when the process was idle."""
        return self._idle.wait(max_wait_s)


IN_FLIGHT = InFlight()  # the one gRPC server of this process enters and leaves it (recsys.rpc.interceptor)
