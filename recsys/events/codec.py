"""Stream records: what Feedback/Send and the exposure log write, and what consumers read."""

from __future__ import annotations

import time
from collections.abc import Iterable

from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import stream_pb2 as spb

# Exposures go to a topic of their own beside the events (recsys.stream.topic_url): one per Recommend,
# they would otherwise be most of what every event consumer reads.
EXPOSURE_TOPIC = "exposures"


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_event(ev: fpb.FeedbackEvent, accepted_at_ms: int, producer: str = "") -> bytes:
    """A validated event as a stream record; an event without a timestamp happened when accepted."""
    ts = ev.timestamp.seconds * 1000 + ev.timestamp.nanos // 1_000_000 if ev.HasField("timestamp") else accepted_at_ms
    return spb.StreamRecord(accepted_at_ms=accepted_at_ms, timestamp_ms=ts, event=ev,
                            producer=producer).SerializeToString()


def encode_exposure(exposure: spb.Exposure, at_ms: int, request_ms: int = 0) -> bytes:
    """`request_ms` is the request's own time (its context.time), `at_ms` when it was answered."""
    return spb.StreamRecord(accepted_at_ms=at_ms, timestamp_ms=request_ms or at_ms,
                            exposure=exposure).SerializeToString()


def decode(data: bytes) -> spb.StreamRecord:
    """Parse one record; a corrupt record raises (its consumer retries it, then dead-letters it)."""
    rec = spb.StreamRecord()
    rec.ParseFromString(data)
    if rec.WhichOneof("kind") is None:
        raise ValueError("stream record has neither an event nor an exposure")
    return rec


def interactions_by_user(events: Iterable[fpb.FeedbackEvent]) -> dict[str, list[tuple[str, str]]]:
    """The (event id, item id) pairs of the interactions among `events`, per user, in order: what the
    per-user cache notes, whether the events come from Send or from the stream (here, beside the codec,
    so the ranker's lean cache-follower child can use it too)."""
    by_user: dict[str, list[tuple[str, str]]] = {}
    for ev in events:
        if ev.WhichOneof("kind") == "interaction":
            by_user.setdefault(ev.interaction.user_id, []).append((ev.event_id, ev.interaction.item_id))
    return by_user
