"""The ranker's stream follower: a child process that reads the event stream for two jobs, each on only
when needed, so that Python work at the event rate stays out of the serving process.

The cache: interactions accepted by *other* ranker replicas reach this replica's in-process cache through
the stream (this process's own Sends note them directly). A shared Redis cache is noted by whichever
replica accepted the event, so it needs no follower. Reading and decoding every event in a thread of the
ranker made each Recommend wait for the interpreter lock at every hop (p99 +15 ms at 2,900 events/s on 2
cores), so the child consumes the group `cache@<replica>`, drops what this process appended itself (the
record's `producer`), and sends the other interactions, grouped by user, through a pipe; a thread here
notes them. With one replica nothing crosses the pipe.

Forgets (Users/Forget): a forget record, whichever replica appended it, reaches every replica's follower,
which calls `on_forget(user)` here (the cache, the last good lists, the queued exposures). So the follower
runs in every ranker, also without an in-process cache (then it forwards forgets only).

Outcomes (whenever exposures are logged, with or without an experiments file): the child joins
clicks and purchases to the exposures they name (recsys/experiments/outcomes.py, groups in
ranker_svc/stream_follower_child.py) and sends per-arm counts every 0.5 s; the thread here adds them to
recsys_experiment_{stream_impressions,clicks,conversions}_total. The same join counts per model version, into
recsys_model_{stream_impressions,clicks,conversions}_total (the online CTR by version).

The child's consumer metrics cross the pipe too, so its groups' lag and dead letters are exported by the
ranker. A child that dies is restarted (backoff up to 5 s); it dies with the ranker.
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
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from recsys.cache import CacheUnavailable, ListCache
from recsys.child_process import child_env
from recsys.events.consumers import consumer_name, replica_name
from recsys.experiments.outcomes import DROP_REASONS
from recsys.metrics import (
    CONSUMER_APPLIED,
    CONSUMER_LAG,
    DEAD_LETTERS,
    EXPERIMENT_CLICKS,
    EXPERIMENT_CONVERSIONS,
    EXPERIMENT_OUTCOMES_DROPPED,
    EXPERIMENT_STREAM_IMPRESSIONS,
    MODEL_CLICKS,
    MODEL_CONVERSIONS,
    MODEL_STREAM_IMPRESSIONS,
)
from recsys.stream import EventStream

log = logging.getLogger("ranker_svc.stream_follower")
_MAX_RESTART_S = 5.0
_OUTCOMES = {"impressions": EXPERIMENT_STREAM_IMPRESSIONS, "clicks": EXPERIMENT_CLICKS,
             "conversions": EXPERIMENT_CONVERSIONS}
_BY_VERSION = {"impressions": MODEL_STREAM_IMPRESSIONS, "clicks": MODEL_CLICKS, "conversions": MODEL_CONVERSIONS}


def cache_group() -> str:
    """Every replica must see every event: a group of its own."""
    return f"cache@{replica_name()}"


def outcome_groups() -> dict[str, str]:
    """The join must hold every exposure: a group per replica; impressions and interactions are counted
    once across the replicas: groups they share."""
    return {"exposures": f"outcomes@{replica_name()}", "impressions": "experiment-impressions",
            "events": "experiment-outcomes"}


class StreamFollower:
    def __init__(self, stream_url: str, cache: ListCache | None, producer: str, batch: int, outcomes: bool = False,
                 on_forget: Callable[[str], object] | None = None):
        """`cache`: the in-process cache to note foreign interactions in (None: no notes); `outcomes`: join
        clicks and purchases to exposures (per arm and per model version); `on_forget(user_id)`: what this
        replica erases for a forget record (Users/Forget; without it a forget erases the user from `cache`).
        Either of the first and the last runs the cache job."""
        self.stream_url = stream_url
        self.cache = cache
        self.producer = producer
        self.batch = batch
        self.on_forget = on_forget
        self.group = cache_group() if cache is not None or on_forget is not None else None
        self.outcome_groups = outcome_groups() if outcomes else None
        self._streams: tuple[EventStream | None, EventStream | None] = (None, None)
        self._stop = threading.Event()
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._last: dict[str, tuple[float, float]] = {}  # group -> the child's (applied, dead letters)
        for group in self.groups():
            for metric in (DEAD_LETTERS, CONSUMER_APPLIED):  # exported at 0, so the first one is an increase
                metric.labels(group)
        for reason in DROP_REASONS if outcomes else ():
            EXPERIMENT_OUTCOMES_DROPPED.labels(reason)

    def groups(self) -> list[str]:
        return [g for g in (self.group, *(self.outcome_groups or {}).values()) if g]

    def start(self, stream: EventStream, exposure_stream: EventStream | None = None) -> None:
        """The groups are created here, before the ranker reports SERVING, so no record appended after that
        is missed while the child starts; a stream that is down now is left to the child's loops."""
        self._streams = (stream, exposure_stream)
        with contextlib.suppress(Exception):
            if self.group:
                stream.ensure_group(self.group, "end")
            if self.outcome_groups and exposure_stream is not None:
                stream.ensure_group(self.outcome_groups["events"], "end")
                exposure_stream.ensure_group(self.outcome_groups["exposures"], "end")
                exposure_stream.ensure_group(self.outcome_groups["impressions"], "end")
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="stream-follower")
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the child, then delete this replica's own groups (nobody reads them after it); the shared
        groups stay for the other replicas and the next start."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        if self._thread is not None:
            self._thread.join(timeout_s)
        stream, exposure_stream = self._streams
        with contextlib.suppress(Exception):
            if self.group and stream is not None:
                stream.delete_group(self.group)
        with contextlib.suppress(Exception):
            if self.outcome_groups and exposure_stream is not None:
                exposure_stream.delete_group(self.outcome_groups["exposures"])

    def _spawn(self) -> tuple[subprocess.Popen, Connection]:
        """`python -m ranker_svc.stream_follower_child`: a lean child (no model, no gRPC server) that writes
        to a pipe; its settings go through stdin, so a stream URL's password never shows in `ps`."""
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ranker_svc.stream_follower_child", str(write_fd)],
                                    stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
                                    env=child_env())
        finally:
            os.close(write_fd)  # the child holds the only writer: its death is our EOF
        config = {"stream": self.stream_url, "cache_group": self.group, "outcome_groups": self.outcome_groups,
                  "consumer": consumer_name(), "producer": self.producer, "batch": self.batch,
                  "notes": self.cache is not None}
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
            self._last.clear()  # the child's counters start over
            with contextlib.suppress(EOFError, OSError):
                while True:
                    self._handle(receiver.recv())
            receiver.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1.0)
            if self._stop.is_set():
                return
            backoff = 0.5 if time.monotonic() - started > 60 else min(_MAX_RESTART_S, backoff * 2)
            log.warning("stream follower exited (code %s); restarting in %.1f s", self._proc.returncode, backoff)
            self._stop.wait(backoff)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "notes" and self.cache is not None:
            for user_id, pairs in message[1].items():
                with contextlib.suppress(CacheUnavailable):
                    self.cache.note_interactions(user_id, pairs)
        elif kind == "forget":
            for user_id in message[1]:
                try:
                    if self.on_forget is not None:
                        self.on_forget(user_id)
                    elif self.cache is not None:
                        self.cache.forget(user_id)
                except Exception as exc:  # e.g. a shared cache down: the forgetting replica reports its own
                    log.warning("stream follower: could not forget a user here: %s", exc)
        elif kind == "metrics":
            for group, (lag, applied, dead) in message[1].items():
                if lag is not None:
                    CONSUMER_LAG.labels(group).set(lag)
                last_applied, last_dead = self._last.get(group, (0.0, 0.0))
                CONSUMER_APPLIED.labels(group).inc(max(0.0, applied - last_applied))
                DEAD_LETTERS.labels(group).inc(max(0.0, dead - last_dead))
                self._last[group] = (applied, dead)
        elif kind == "outcomes":
            counts, dropped = message[1:]
            for (experiment, arm, what), n in counts.items():
                _OUTCOMES[what].labels(experiment, arm).inc(n)
            for reason, n in dropped.items():
                EXPERIMENT_OUTCOMES_DROPPED.labels(reason).inc(n)
        elif kind == "versions":
            for (version, what), n in message[1].items():
                _BY_VERSION[what].labels(version).inc(n)
