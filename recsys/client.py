"""A small synchronous client for the public API: Recommend and Feedback/Send (CLI, demo, tests)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence

import grpc

from recsys.rpc.retry import PUBLIC_SERVICES, retry_options
from recsys.rpc.tls import ClientTLS
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

# Marks a Recommend call that only fills the cache (`recsys cache warm`): no exposure is logged for it.
WARMUP_METADATA = ("x-recsys-warmup", "1")


class RecommenderClient:
    def __init__(self, target: str, *, tls: ClientTLS | None = None, token: str | None = None):
        """`tls` (default: RECSYS_CLIENT_CA, _CERT, _KEY from the environment; none: plaintext) and the bearer
        `token` (default: RECSYS_CLIENT_TOKEN) are how the ranker knows its caller (docs/operations.md)."""
        tls = tls or ClientTLS.from_env()
        # Retries of UNAVAILABLE under a retry budget (recsys/rpc/retry.py): Send is idempotent by event id.
        options = retry_options(PUBLIC_SERVICES)
        self.channel = (grpc.secure_channel(target, tls.credentials(), options=options) if tls
                        else grpc.insecure_channel(target, options=options))
        token = os.environ.get("RECSYS_CLIENT_TOKEN", "") if token is None else token
        self.auth: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.feedback = fpb_grpc.FeedbackStub(self.channel)

    def recommend(self, user_id: str, k: int = 10, *, timeout: float = 5.0, warmup: bool = False,
                  **fields) -> pb.RecommendResponse:
        metadata = (*self.auth, WARMUP_METADATA) if warmup else self.auth or None
        return self.stub.Recommend(pb.RecommendRequest(user_id=user_id, k=k, **fields), timeout=timeout,
                                   metadata=metadata)

    def send(self, events: Sequence[fpb.FeedbackEvent], *, timeout: float = 10.0) -> fpb.SendResponse:
        return self.feedback.Send(fpb.SendRequest(events=events), timeout=timeout, metadata=self.auth or None)

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
