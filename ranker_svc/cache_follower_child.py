"""The cache follower's child process (ranker_svc/cache_follower.py): consumes the group from the end,
sends this replica's foreign interactions, grouped by user, and its consumer metrics through a pipe.

Imports only the stream, the record codec and prometheus_client, so it stays small (no model, no gRPC).
`python -m ranker_svc.cache_follower_child FD`, its settings as JSON on stdin.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY

from recsys.events.codec import decode, interactions_by_user
from recsys.stream import ConsumerLoop, open_stream

_METRICS_EVERY_S = 0.5


def follow(stream_url: str, group: str, consumer: str, producer: str, batch: int, conn: Any) -> None:
    """Consume `group` from the end; send the foreign interactions and the metrics until the pipe breaks."""
    lock = threading.Lock()  # the handler's thread and the metrics loop share the pipe

    def handle(entries: list) -> None:
        records = (decode(entry.data) for entry in entries)
        by_user = interactions_by_user(rec.event for rec in records
                                       if rec.producer != producer and rec.WhichOneof("kind") == "event")
        if by_user:
            with lock:
                conn.send(("notes", by_user))

    stream = open_stream(stream_url)
    loop = ConsumerLoop(stream, group, consumer, handle, start="end", batch=batch)
    loop.start_thread()

    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"group": group})

    try:
        while True:
            time.sleep(_METRICS_EVERY_S)
            with lock:
                conn.send(("metrics", sample("recsys_stream_consumer_lag"),
                           sample("recsys_stream_consumer_applied_total") or 0.0,
                           sample("recsys_stream_dead_letters_total") or 0.0))
    except (BrokenPipeError, EOFError, OSError):
        pass  # the ranker is gone
    finally:
        loop.stop()


def main() -> None:
    settings = json.loads(sys.stdin.read())
    pipe = Connection(int(sys.argv[1]), readable=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s cache-follower %(message)s")
    follow(settings["stream"], settings["group"], settings["consumer"], settings["producer"], settings["batch"], pipe)


if __name__ == "__main__":
    main()
