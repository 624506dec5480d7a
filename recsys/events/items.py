"""The new-items consumer: item upserts on the stream placed in a candidate generator's retrieval space
(content vector, ANN index, content source) without retraining. Idempotent: an unchanged upsert of a
known item does nothing, a changed one updates it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from recsys.events.codec import decode
from recsys.metrics import EVENT_VISIBLE
from recsys.retrieval.generator import CandidateGenerator
from recsys.retrieval.growth import NewItem

_DECODE_CHUNK = 64  # records decoded between two yields to requests (most are interactions: skipped)


class ItemApplier:
    def __init__(self, generator: CandidateGenerator, group: str, pace: Callable[[], object] | None = None):
        """`pace` is called before each chunk of records: a serving process passes its yield to requests
        (recsys.rpc.priority), so a long batch of interactions is skimmed in the gaps between requests."""
        self.generator = generator
        self.group = group
        self.pace = pace or (lambda: None)

    def __call__(self, entries: Sequence) -> None:
        items: dict[str, NewItem] = {}  # the last upsert of an id in the batch wins, as in stream order
        accepted: list[int] = []
        for n, e in enumerate(entries):
            if n and n % _DECODE_CHUNK == 0:
                self.pace()
            rec = decode(e.data)
            if rec.WhichOneof("kind") == "event" and rec.event.WhichOneof("kind") == "item":
                it = rec.event.item
                items.pop(it.item_id, None)
                items[it.item_id] = NewItem(it.item_id, it.title, tuple(it.categories))
                accepted.append(rec.accepted_at_ms)
        if items:
            self.generator.add_items(list(items.values()))  # one call per poll: it copies catalog-sized arrays
            now_ms = time.time() * 1000
            for at in accepted:
                EVENT_VISIBLE.labels(self.group).observe(max(0.0, now_ms - at) / 1000)
