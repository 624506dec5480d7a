"""A small synchronous client for the public API: Recommend and Feedback/Send (CLI, demo, tests)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import grpc

from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

# Marks a Recommend call that only fills the cache (`recsys cache warm`): no exposure is logged for it.
WARMUP_METADATA = ("x-recsys-warmup", "1")


class RecommenderClient:
    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.feedback = fpb_grpc.FeedbackStub(self.channel)

    def recommend(self, user_id: str, k: int = 10, *, timeout: float = 5.0, warmup: bool = False,
                  **fields) -> pb.RecommendResponse:
        metadata = (WARMUP_METADATA,) if warmup else None
        return self.stub.Recommend(pb.RecommendRequest(user_id=user_id, k=k, **fields), timeout=timeout,
                                   metadata=metadata)

    def send(self, events: Sequence[fpb.FeedbackEvent], *, timeout: float = 10.0) -> fpb.SendResponse:
        return self.feedback.Send(fpb.SendRequest(events=events), timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def interaction(user_id: str, item_id: str, type: str = "click", *, event_id: str = "", value: float | None = None,
                request_id: str = "", timestamp: float | None = None) -> fpb.FeedbackEvent:
    """An interaction event; a random event id when none is given (give one to make retries idempotent)."""
    ev = fpb.FeedbackEvent(event_id=event_id or uuid.uuid4().hex,
                           interaction=fpb.Interaction(user_id=user_id, item_id=item_id, type=type,
                                                       request_id=request_id))
    if value is not None:
        ev.interaction.value = value
    ev.timestamp.FromNanoseconds(int((time.time() if timestamp is None else timestamp) * 1e9))
    return ev


def item_upsert(item_id: str, title: str, categories: Sequence[str], *, event_id: str = "",
                attributes: dict[str, str] | None = None) -> fpb.FeedbackEvent:
    ev = fpb.FeedbackEvent(event_id=event_id or uuid.uuid4().hex,
                           item=fpb.ItemUpsert(item_id=item_id, title=title, categories=list(categories),
                                               attributes=attributes or {}))
    ev.timestamp.GetCurrentTime()
    return ev
