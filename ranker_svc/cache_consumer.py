"""The cache consumer: interactions accepted by *other* ranker replicas reach this replica's in-process
cache through the stream (this replica's own Sends note them directly). A shared Redis cache is noted
by whichever replica accepted the event, so it needs no consumer."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from recsys.cache import CacheUnavailable, ListCache
from recsys.events.apply import is_interaction
from recsys.events.codec import decode
from recsys.events.consumers import consumer_name, replica_name
from recsys.stream import ConsumerLoop, Entry, EventStream


def cache_consumer(stream: EventStream, cache: ListCache, batch: int) -> ConsumerLoop | None:
    if not getattr(cache, "in_process", False):
        return None
    group = f"cache@{replica_name()}"  # every replica must see every event: a group of its own

    def handle(entries: Sequence[Entry]) -> None:
        by_user: dict[str, list[tuple[str, str]]] = {}
        for e in entries:
            rec = decode(e.data)
            if is_interaction(rec):
                it = rec.event.interaction
                by_user.setdefault(it.user_id, []).append((rec.event.event_id, it.item_id))
        for user_id, pairs in by_user.items():
            with contextlib.suppress(CacheUnavailable):  # idempotent per event id: our own Sends are no-ops
                cache.note_interactions(user_id, pairs)

    loop = ConsumerLoop(stream, group, consumer_name(), handle, start="end", batch=batch)
    with contextlib.suppress(Exception):  # the stream may be down: the loop creates the group when it is back
        stream.ensure_group(group, "end")
    loop.start_thread()
    return loop
