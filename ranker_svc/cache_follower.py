"""The cache follower: interactions accepted by *other* ranker replicas reach this replica's in-process
cache through the stream (this process's own Sends note them directly). A shared Redis cache is noted
by whichever replica accepted the event, so it needs no follower.

Reading and decoding every event on the stream is Python work at the event rate. Done in a thread of the
ranker it made each Recommend wait for the interpreter lock at every hop (p99 +15 ms at 2,900 events/s
on 2 cores), so a child process does it: it consumes the group `cache@<replica>`, drops what this
process appended itself (the record's `producer`), and sends the other interactions, grouped by user,
through a pipe (ranker_svc/cache_follower_child.py); a thread here notes them. With one replica
nothing crosses the pipe. The child's consumer metrics cross it too, so the group's lag and dead letters
are exported by the ranker as before.
A child that dies is restarted (backoff up to 5 s); it dies with the ranker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from recsys.cache import CacheUnavailable, ListCache
from recsys.cluster import die_with_parent
from recsys.events.consumers import consumer_name, replica_name
from recsys.metrics import CONSUMER_APPLIED, CONSUMER_LAG, DEAD_LETTERS
from recsys.stream import EventStream

log = logging.getLogger("ranker_svc.cache_follower")
_MAX_RESTART_S = 5.0


def cache_group() -> str:
    """Every replica must see every event: a group of its own."""
    return f"cache@{replica_name()}"


class CacheFollower:
    def __init__(self, stream_url: str, cache: ListCache, producer: str, batch: int):
        self.stream_url = stream_url
        self.cache = cache
        self.producer = producer
        self.batch = batch
        self.group = cache_group()
        self._stop = threading.Event()
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._applied = 0.0
        self._dead = 0.0
        for metric in (DEAD_LETTERS, CONSUMER_APPLIED):  # exported at 0, so the first one is an increase
            metric.labels(self.group)

    def start(self, stream: EventStream) -> None:
        """The group is created here, before the ranker reports SERVING, so no event accepted after that
        is missed while the child starts; a stream that is down now is left to the child's loop."""
        with contextlib.suppress(Exception):
            stream.ensure_group(self.group, "end")
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="cache-follower")
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _spawn(self) -> tuple[subprocess.Popen, Connection]:
        """`python -m ranker_svc.cache_follower_child`: a lean child (no model, no gRPC server) that writes
        to a pipe; its settings go through stdin, so a stream URL's password never shows in `ps`."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ranker_svc.cache_follower_child", str(write_fd)],
                                    stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
                                    preexec_fn=die_with_parent if sys.platform == "linux" else None)
        finally:
            os.close(write_fd)  # the child holds the only writer: its death is our EOF
        config = {"stream": self.stream_url, "group": self.group, "consumer": consumer_name(),
                  "producer": self.producer, "batch": self.batch}
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(json.dumps(config).encode())
            proc.stdin.close()
        return proc, Connection(read_fd, writable=False)

    def _supervise(self) -> None:
        """Run the child and note what it sends; restart it when it dies."""
        backoff = 0.5
        while not self._stop.is_set():
            started = time.monotonic()
            self._proc, receiver = self._spawn()
            self._applied = self._dead = 0.0  # the child's counters start over
            with contextlib.suppress(EOFError, OSError):
                while True:
                    self._handle(receiver.recv())
            receiver.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1.0)
            if self._stop.is_set():
                return
            backoff = 0.5 if time.monotonic() - started > 60 else min(_MAX_RESTART_S, backoff * 2)
            log.warning("cache follower exited (code %s); restarting in %.1f s", self._proc.returncode, backoff)
            self._stop.wait(backoff)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "notes":
            for user_id, pairs in message[1].items():
                with contextlib.suppress(CacheUnavailable):
                    self.cache.note_interactions(user_id, pairs)
        elif kind == "metrics":
            lag, applied, dead = message[1:]
            if lag is not None:
                CONSUMER_LAG.labels(self.group).set(lag)
            CONSUMER_APPLIED.labels(self.group).inc(max(0.0, applied - self._applied))
            DEAD_LETTERS.labels(self.group).inc(max(0.0, dead - self._dead))
            self._applied, self._dead = applied, dead
