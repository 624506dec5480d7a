"""What a Feedback event must satisfy to be accepted; every reason names the offending field."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from recsys.data.schema import EVENT_WEIGHTS
from recsys.v1 import feedback_pb2 as pb

INTERACTION_TYPES = frozenset(EVENT_WEIGHTS)  # the types training knows how to weigh


@dataclass(frozen=True)
class Limits:
    """Bounds on one Send call: a caller can never make the service hold or store unbounded data."""

    max_batch: int = 10_000
    max_event_id: int = 256
    max_id: int = 512
    max_title: int = 1_000
    max_categories: int = 100
    max_category: int = 200
    max_attributes: int = 100
    max_attribute_key: int = 100
    max_attribute_value: int = 1_000
    max_future_s: float = 300.0        # clock skew tolerated for event timestamps
    min_timestamp_s: float = 946_684_800.0  # 2000-01-01: earlier is a unit mistake (ms sent as s, or 0)

    @classmethod
    def of(cls, settings: object) -> Limits:
        """From ranker_svc's settings (max_send_batch, max_id_len, max_map_*, max_title_len, ...)."""
        d = cls()
        names = {"max_batch": "max_send_batch", "max_event_id": "max_event_id_len", "max_id": "max_id_len",
                 "max_title": "max_title_len", "max_categories": "max_categories", "max_category": "max_category_len",
                 "max_attributes": "max_map_entries", "max_attribute_key": "max_map_key_len",
                 "max_attribute_value": "max_map_value_len"}
        return cls(**{field: getattr(settings, name, getattr(d, field)) for field, name in names.items()})


def _id(value: str, field: str, limit: int) -> str | None:
    if not value:
        return f"{field} must be non-empty"
    if len(value) > limit:
        return f"{field} must be at most {limit} characters, got {len(value)}"
    return None


def _attributes(attrs, field: str, lim: Limits) -> str | None:
    if len(attrs) > lim.max_attributes:
        return f"{field}: at most {lim.max_attributes} attributes, got {len(attrs)}"
    for key, value in attrs.items():
        if not key or len(key) > lim.max_attribute_key:
            return f"{field}: keys must be 1..{lim.max_attribute_key} characters"
        if len(value) > lim.max_attribute_value:
            return f"{field}[{key!r}] must be at most {lim.max_attribute_value} characters"
    return None


def validate_event(ev: pb.FeedbackEvent, index: int, lim: Limits, now: float | None = None) -> str | None:
    """The first problem with `ev` (the `index`-th of its batch) as a message naming the field, or None."""
    at = f"events[{index}]"
    problem = _id(ev.event_id, f"{at}.event_id", lim.max_event_id)
    if problem:
        return problem
    if ev.HasField("timestamp"):
        if not 0 <= ev.timestamp.nanos <= 999_999_999:
            return f"{at}.timestamp.nanos must be between 0 and 999999999, got {ev.timestamp.nanos}"
        ts = ev.timestamp.seconds + ev.timestamp.nanos / 1e9
        now = time.time() if now is None else now
        if ts > now + lim.max_future_s:
            return f"{at}.timestamp is {ts - now:.0f}s in the future (at most {lim.max_future_s:.0f}s of clock skew)"
        if ts < lim.min_timestamp_s:
            return f"{at}.timestamp must be after 2000-01-01 (seconds since the epoch, not milliseconds), got {ts:.0f}"
    kind = ev.WhichOneof("kind")
    if kind is None:
        return f"{at} must set one of interaction, item or user"
    if kind == "interaction":
        it = ev.interaction
        problem = (_id(it.user_id, f"{at}.interaction.user_id", lim.max_id)
                   or _id(it.item_id, f"{at}.interaction.item_id", lim.max_id))
        if problem:
            return problem
        if it.type not in INTERACTION_TYPES:
            return (f"{at}.interaction.type {it.type!r} is unknown "
                    f"(one of {', '.join(sorted(INTERACTION_TYPES))})")
        if it.HasField("value") and not math.isfinite(it.value):
            return f"{at}.interaction.value must be finite"
        if it.type == "rating" and not it.HasField("value"):
            return f"{at}.interaction.value is required for a rating"
        if len(it.request_id) > lim.max_id:
            return f"{at}.interaction.request_id must be at most {lim.max_id} characters"
        return None
    if kind == "item":
        item = ev.item
        problem = _id(item.item_id, f"{at}.item.item_id", lim.max_id)
        if problem:
            return problem
        if len(item.title) > lim.max_title:
            return f"{at}.item.title must be at most {lim.max_title} characters"
        if len(item.categories) > lim.max_categories:
            return f"{at}.item.categories: at most {lim.max_categories}, got {len(item.categories)}"
        for k, c in enumerate(item.categories):
            if not c or len(c) > lim.max_category:
                return f"{at}.item.categories[{k}] must be 1..{lim.max_category} characters"
        return _attributes(item.attributes, f"{at}.item.attributes", lim)
    user = ev.user
    return (_id(user.user_id, f"{at}.user.user_id", lim.max_id)
            or _attributes(user.attributes, f"{at}.user.attributes", lim))
