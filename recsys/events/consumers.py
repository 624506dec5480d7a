"""One stream consumer per live model version: each version's state (its feature store namespace, its
candidate index) reads the stream at its own position, from the point its bundle was trained up to.

Used as the `on_change` hook of a service's LiveVersions: a version that appears gets a consumer
thread, a retired one has its consumer stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from recsys.metrics import CONSUMER_APPLIED, CONSUMER_LAG, DEAD_LETTERS
from recsys.storage import StorageUnavailable
from recsys.stream import ConsumerLoop, EventStream, StreamUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def consumer_name() -> str:
    """Unique per process, stable for its life: a restarted process gets its pending entries claimed."""
    return f"{socket.gethostname()}-{os.getpid()}"


def replica_name() -> str:
    """This replica (RECSYS_REPLICA, else the host name: a Kubernetes pod's name)."""
    return os.environ.get("RECSYS_REPLICA") or socket.gethostname()


@dataclass
class _Running:
    obj: Any
    loop: ConsumerLoop
    thread: threading.Thread
    group: str


class VersionConsumers(Generic[T]):
    """Starts and stops a ConsumerLoop per live version.

    handler(group, obj) makes the idempotent handler of a version's state (the group labels its metrics);
    start(version, obj) says where its group starts ("begin" or an entry id); replay(obj) is True when
    that state lives only in this process (an embedded store, an in-memory index): its group is rewound
    to the start on every process start, because what it had applied died with the previous process.
    pace, slice_size and interval_s go to each ConsumerLoop (a serving process passes its yield to
    requests).
    """

    def __init__(self, stream: EventStream, kind: str, handler: Callable[[str, T], Callable],
                 start: Callable[[str, T], str], replay: Callable[[T], bool], batch: int = 500,
                 pace: Callable[[], object] | None = None, slice_size: int = 0, interval_s: float = 0.0):
        self.stream = stream
        self.kind = kind
        self.make_handler = handler
        self.start = start
        self.replay = replay
        self.batch = batch
        self.pace = pace
        self.slice_size = slice_size
        self.interval_s = interval_s
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def group(self, version: str, obj: T) -> str:
        """One group per version, shared by the replicas when the state is shared (a Redis store: each
        entry applied once by whichever replica reads it); one per replica when the state lives in the
        process (every replica must apply every entry)."""
        base = f"{self.kind}@{version}" if version else self.kind
        return f"{base}@{replica_name()}" if self.replay(obj) else base

    def sync(self, live: Any) -> None:
        """LiveVersions.on_change: match the running consumers to the live versions."""
        wanted = {v: live.get(v)[1] for v in live.versions()}
        with self._lock:
            for version in list(self._running):
                if version not in wanted or self._running[version].obj is not wanted[version]:
                    self._stop(version)
            for version, obj in wanted.items():
                if version not in self._running:
                    self._begin(version, obj)

    def _begin(self, version: str, obj: T) -> None:
        group, start = self.group(version, obj), self.start(version, obj)
        DEAD_LETTERS.labels(group)  # exported at 0, so the first dead letter is an increase
        try:
            self.stream.ensure_group(group, start)
            if self.replay(obj):
                self.stream.seek(group, start)
        except Exception as exc:  # the stream being down must not stop a version from serving
            log.warning("consumer %s: cannot position the group yet (%s); it will start at its saved position",
                        group, exc)
        loop = ConsumerLoop(self.stream, group, consumer_name(), self.make_handler(group, obj), start=start,
                            batch=self.batch, transient_errors=(StreamUnavailable, StorageUnavailable),
                            slice_size=self.slice_size, pace=self.pace, interval_s=self.interval_s)
        thread = loop.start_thread()
        self._running[version] = _Running(obj, loop, thread, group)
        log.info("consumer %s started at %s", group, start)

    def _stop(self, version: str) -> None:
        running = self._running.pop(version)
        running.loop.stop()
        running.thread.join(timeout=5)
        for metric in (CONSUMER_LAG, CONSUMER_APPLIED, DEAD_LETTERS):  # a retired group must not keep alerting
            with contextlib.suppress(KeyError):
                metric.remove(running.group)
        if self.replay(running.obj):  # this replica's own group: nobody will read it again
            try:
                self.stream.delete_group(running.group)
            except Exception as exc:
                log.warning("could not delete consumer group %s: %s", running.group, exc)

    def close(self) -> None:
        with self._lock:
            for version in list(self._running):
                self._stop(version)
