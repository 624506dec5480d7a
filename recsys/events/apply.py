"""The online-features consumer: stream records applied to a FeatureStorage, idempotently.

Interactions carry their event id into `record_events` (a redelivered one is skipped by the store,
atomically with its effect); upserts are idempotent by nature. Exposures are not features: skipped.
A forget record (Users/Forget) erases the user at its place in the stream; interactions and upserts of a
forgotten user accepted before their forget are skipped (`forgotten`, from the registry and the forget
records seen), so a replay never brings them back even if an entry escaped the stream's redaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from recsys.events.codec import decode
from recsys.forget import Forgotten
from recsys.metrics import EVENT_VISIBLE
from recsys.storage import Event, FeatureStorage, ItemRecord

# Item features a brand-new item starts with, besides zeros (it has no interactions yet).
_TIME_FEATURES = ("item_first_ts", "item_mean_ts")


def new_item_values(names: Sequence[str], timestamp_s: float) -> np.ndarray:
    values = np.zeros(len(names), dtype=np.float32)
    for name in _TIME_FEATURES:
        if name in names:
            values[list(names).index(name)] = timestamp_s
    return values


class FeatureApplier:
    """Applies batches of stream entries to one storage; the handler of a ConsumerLoop."""

    def __init__(self, storage: FeatureStorage, group: str, forgotten: Forgotten | None = None):
        self.storage = storage
        self.group = group
        self.forgotten = forgotten if forgotten is not None else Forgotten()

    def __call__(self, entries: Sequence) -> None:
        records = [decode(e.data) for e in entries]
        events: list[Event] = []
        for rec in records:
            if rec.WhichOneof("kind") == "forget":
                self._flush(events)  # what came before the forget is erased with the rest
                self.storage.forget_users([rec.forget.user_id])
                self.forgotten.add(rec.forget.user_id, rec.accepted_at_ms)
                continue
            if rec.WhichOneof("kind") != "event":
                continue
            ev = rec.event
            kind = ev.WhichOneof("kind")
            user = ev.interaction.user_id if kind == "interaction" else ev.user.user_id if kind == "user" else ""
            if user and self.forgotten and self.forgotten.hides(user, rec.accepted_at_ms):
                continue
            if kind == "interaction":
                it = ev.interaction
                events.append(Event(it.user_id, it.item_id, it.type, it.value if it.HasField("value") else 1.0,
                                    rec.timestamp_ms // 1000, ev.event_id))
                continue
            self._flush(events)  # keep the stream's order between interactions and upserts
            if kind == "item":
                self.storage.upsert_items([ItemRecord(ev.item.item_id,
                                                      new_item_values(self.storage.item_feature_names,
                                                                      rec.timestamp_ms / 1000),
                                                      list(ev.item.categories), ev.item.title)])
            elif kind == "user":
                self.storage.upsert_users([(ev.user.user_id, dict(ev.user.attributes))])
        self._flush(events)
        now_ms = time.time() * 1000
        for rec in records:
            if rec.WhichOneof("kind") == "event":
                EVENT_VISIBLE.labels(self.group).observe(max(0.0, now_ms - rec.accepted_at_ms) / 1000)

    def _flush(self, events: list[Event]) -> None:
        if events:
            self.storage.record_events(events)
            events.clear()
