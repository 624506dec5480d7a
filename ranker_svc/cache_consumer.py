"""The cache consumer: interactions accepted by *other* ranker replicas reach this replica's in-process
cache through the stream (this replica's own Sends note them directly). A shared Redis cache is noted
by whichever replica accepted the event, so it needs no consumer."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from recsys.cache import CacheUnavailable, ListCache
from recsys.events.apply import interactions_by_user, stream_events
from recsys.events.consumers import consumer_name, replica_name
from recsys.stream import ConsumerLoop, Entry, EventStream


def cache_consumer(stream: EventStream, cache: ListCache, batch: int) -> ConsumerLoop | None:
    if not getattr(cache, "in_process", False):
        return None
    group = f"cache@{replica_name()}"  # every replica must see every event: a group of its own

    def handle(entries: Sequence[Entry]) -> None:
        for user_id, pairs in interactions_by_user(stream_events(entries)).items():
            with contextlib.suppress(CacheUnavailable):  # idempotent per event id: our own Sends are no-ops
                cache.note_interactions(user_id, pairs)

    loop = ConsumerLoop(stream, group, consumer_name(), handle, start="end", batch=batch)
    with contextlib.suppress(Exception):  # the stream may be down: the loop creates the group when it is back
        stream.ensure_group(group, "end")
    loop.start_thread()
    return loop
