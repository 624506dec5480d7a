"""The ranker's stream-follower child process (ranker_svc/stream_follower.py). It does up to two jobs and
sends their results, and the consumer metrics of its groups, through a pipe:
- the cache (an in-process cache): consumes `cache@<replica>` from the end and sends this replica's
  foreign interactions, grouped by user; and every forget record (Users/Forget), from any replica, so that
  the replica's cache, last good lists and queued exposures drop the user (this job also runs without an
  in-process cache, sending forgets only; the join, when on, drops the user's held exposures too);
- outcomes (whenever exposures are logged): holds every exposure (group
  `outcomes@<replica>` on the exposures topic: the join needs them all), counts impressions (group
  `experiment-impressions` there) and joins clicks and purchases (group `experiment-outcomes` on the events
  topic) in one OutcomeJoin (recsys/experiments/outcomes.py). The last two groups are shared by the
  replicas, so each record is counted by one of them and a sum over replicas is right. The same join counts
  per model version (the online CTR by version). The counts are sent every 0.5 s.

Imports only the stream, the record codec, the join and prometheus_client, so it stays small (no model,
no gRPC). `python -m ranker_svc.stream_follower_child FD`, its settings as JSON on stdin.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY

from recsys.child_process import background_priority, die_with_parent
from recsys.events.codec import EXPOSURE_TOPIC, decode, interactions_by_user
from recsys.experiments.outcomes import OutcomeJoin
from recsys.stream import ConsumerLoop, open_stream, topic_url
from recsys.v1 import stream_pb2 as spb

_METRICS_EVERY_S = 0.5


def _cache_handler(producer: str, send: Callable[[tuple], None], notes: bool = True,
                   on_forget: Callable[[list[str]], None] | None = None) -> Callable[[list], None]:
    """Foreign interactions as notes (with an in-process cache), and every forget record (Users/Forget),
    from whichever replica, in stream order."""
    def handle(entries: list) -> None:
        events = []

        def flush() -> None:
            by_user = interactions_by_user(events)
            if notes and by_user:
                send(("notes", by_user))
            events.clear()

        for rec in (decode(entry.data) for entry in entries):
            kind = rec.WhichOneof("kind")
            if kind == "event" and rec.producer != producer:
                events.append(rec.event)
            elif kind == "forget":
                flush()
                if on_forget is not None:
                    on_forget([rec.forget.user_id])
                send(("forget", [rec.forget.user_id]))
        flush()

    return handle


def _join_handler(join: OutcomeJoin, lock: threading.Lock, kind: str,
                  apply: Callable[[spb.StreamRecord], None]) -> Callable[[list], None]:
    def handle(entries: list) -> None:
        records = [decode(entry.data) for entry in entries]  # a corrupt record raises before anything counts
        with lock:
            for rec in records:
                if rec.WhichOneof("kind") == kind:
                    apply(rec)

    return handle


def follow(settings: dict[str, Any], conn: Any) -> None:
    """Run the configured jobs from the end of their groups; send until the pipe breaks."""
    pipe_lock = threading.Lock()  # the handlers' threads and the metrics loop share the pipe
    join_lock = threading.Lock()  # the join is fed by three consumer threads

    def send(message: tuple) -> None:
        with pipe_lock:
            conn.send(message)

    url, consumer, batch = settings["stream"], settings["consumer"], settings["batch"]
    loops: list[ConsumerLoop] = []
    groups = settings.get("outcome_groups")
    join = OutcomeJoin() if groups else None

    def forget_in_join(users: list[str]) -> None:
        if join is not None:
            with join_lock:
                for user in users:
                    join.forget(user)

    if settings.get("cache_group"):
        handler = _cache_handler(settings["producer"], send, settings.get("notes", True), forget_in_join)
        loops.append(ConsumerLoop(open_stream(url), settings["cache_group"], consumer, handler, start="end",
                                  batch=batch))
    if join is not None:
        exposures = topic_url(url, EXPOSURE_TOPIC)
        for topic, group, kind, apply in (
                (exposures, groups["exposures"], "exposure", lambda rec: join.exposure(rec, count=False)),
                (exposures, groups["impressions"], "exposure", join.impressions),
                (url, groups["events"], "event", join.interaction)):
            # counts leave every 0.5 s anyway: a longer blocking read costs less while the stream is idle
            loops.append(ConsumerLoop(open_stream(topic), group, consumer, _join_handler(join, join_lock, kind, apply),
                                      start="end", batch=batch, block_s=_METRICS_EVERY_S))
    for loop in loops:
        loop.start_thread()

    def sample(name: str, group: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"group": group})

    try:
        while True:
            time.sleep(_METRICS_EVERY_S)
            send(("metrics", {loop.group: (sample("recsys_stream_consumer_lag", loop.group),
                                           sample("recsys_stream_consumer_applied_total", loop.group) or 0.0,
                                           sample("recsys_stream_dead_letters_total", loop.group) or 0.0)
                              for loop in loops}))
            if join is not None:
                with join_lock:
                    counts, dropped = join.drain()
                    by_version = join.drain_versions()
                if counts or dropped:
                    send(("outcomes", counts, dropped))
                if by_version:
                    send(("versions", by_version))
    except (BrokenPipeError, EOFError, OSError):
        pass  # the ranker is gone
    finally:
        for loop in loops:
            loop.stop()


def main() -> None:
    die_with_parent()
    # Background work: on a busy node it yields the CPU to the serving processes. Each exposure batch wakes
    # this child to decode it (twice: the join and the impressions); measured on 2 cores, with the join on
    # about one cache hit in a hundred more took over 2 ms at the client. A separate process, so a lower
    # priority cannot stall the ranker behind the interpreter lock (as it would for a thread of the ranker's).
    background_priority()
    settings = json.loads(sys.stdin.read())
    pipe = Connection(int(sys.argv[1]), readable=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s stream-follower %(message)s")
    follow(settings, pipe)


if __name__ == "__main__":
    main()
