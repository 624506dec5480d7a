"""Feedback events: every invalid one gets a reason naming its field."""

from __future__ import annotations

import time

import pytest

from recsys.client import interaction, item_upsert
from recsys.events.codec import decode, encode_event
from recsys.events.validate import Limits, validate_event
from recsys.v1 import feedback_pb2 as fpb

LIM = Limits()


def _check(ev: fpb.FeedbackEvent) -> str | None:
    return validate_event(ev, 3, LIM)


def test_valid_events_pass() -> None:
    assert _check(interaction("u1", "i1", "click", event_id="e1")) is None
    assert _check(interaction("u1", "i1", "rating", event_id="e2", value=4.5)) is None
    assert _check(item_upsert("n1", "A title", ["Drama"], event_id="e3")) is None
    assert _check(fpb.FeedbackEvent(event_id="e4", user=fpb.UserUpsert(user_id="u", attributes={"a": "b"}))) is None


@pytest.mark.parametrize("event, field", [
    (interaction("u1", "i1", event_id="x"), None),
    (fpb.FeedbackEvent(interaction=fpb.Interaction(user_id="u", item_id="i", type="click")), "events[3].event_id"),
    (fpb.FeedbackEvent(event_id="e" * 257, interaction=fpb.Interaction(user_id="u", item_id="i", type="click")),
     "events[3].event_id"),
    (fpb.FeedbackEvent(event_id="e"), "events[3] must set one of"),
    (fpb.FeedbackEvent(event_id="e", interaction=fpb.Interaction(item_id="i", type="click")),
     "events[3].interaction.user_id"),
    (fpb.FeedbackEvent(event_id="e", interaction=fpb.Interaction(user_id="u", type="click")),
     "events[3].interaction.item_id"),
    (fpb.FeedbackEvent(event_id="e", interaction=fpb.Interaction(user_id="u", item_id="i", type="teleport")),
     "events[3].interaction.type 'teleport' is unknown"),
    (fpb.FeedbackEvent(event_id="e", interaction=fpb.Interaction(user_id="u", item_id="i", type="rating")),
     "events[3].interaction.value is required"),
    (fpb.FeedbackEvent(event_id="e", interaction=fpb.Interaction(user_id="u", item_id="i", type="click",
                                                                 value=float("nan"))), "events[3].interaction.value"),
    (fpb.FeedbackEvent(event_id="e", item=fpb.ItemUpsert(item_id="n", title="t" * 1001)), "events[3].item.title"),
    (fpb.FeedbackEvent(event_id="e", item=fpb.ItemUpsert(item_id="n", categories=[""])),
     "events[3].item.categories[0]"),
    (fpb.FeedbackEvent(event_id="e", user=fpb.UserUpsert(user_id="")), "events[3].user.user_id"),
    (fpb.FeedbackEvent(event_id="e", user=fpb.UserUpsert(user_id="u", attributes={"k": "v" * 1001})),
     "events[3].user.attributes['k']"),
])
def test_each_problem_names_its_field(event: fpb.FeedbackEvent, field: str | None) -> None:
    reason = _check(event)
    if field is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(field), reason


def test_timestamps_far_in_the_future_or_in_milliseconds_are_rejected() -> None:
    assert "in the future" in _check(interaction("u", "i", event_id="e", timestamp=time.time() + 3600))
    assert _check(interaction("u", "i", event_id="e", timestamp=time.time() + 60)) is None  # clock skew
    assert "milliseconds" in _check(interaction("u", "i", event_id="e", timestamp=1000.0))


def test_a_stream_record_round_trips() -> None:
    ev = interaction("u1", "i1", "purchase", event_id="e9", timestamp=1_700_000_000.5, request_id="r1")
    rec = decode(encode_event(ev, 1_700_000_001_000))
    assert rec.event == ev and rec.accepted_at_ms == 1_700_000_001_000 and rec.timestamp_ms == 1_700_000_000_500
    with pytest.raises(ValueError):
        decode(b"")
