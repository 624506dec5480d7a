"""The request id of the call being served: set by the ranker for each Recommend (its `request_id`, echoed
or generated), sent to feature_svc and candidate_svc as the `x-request-id` metadata of every internal call,
read back there by a server interceptor, and seen by the logs (recsys/rpc/logs.py) and the spans
(attribute `recsys.request_id`) of everything that runs for that call."""

from __future__ import annotations

import contextvars

import grpc
from grpc import aio
from opentelemetry import propagate, trace

from recsys.rpc import tracing

METADATA_KEY = "x-request-id"
SPAN_ATTRIBUTE = "recsys.request_id"
MAX_LEN = 128  # gRPC metadata values are printable ASCII; a long id would bloat every internal call's headers

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("recsys_request_id", default="")


def problem(request_id: str) -> str | None:
    """Why `request_id` cannot travel as gRPC metadata, as a message naming the field, or None."""
    if len(request_id) > MAX_LEN:
        return f"request_id must be at most {MAX_LEN} characters, got {len(request_id)}"
    if not all(" " <= ch <= "~" for ch in request_id):
        return "request_id must be printable ASCII (it is sent to the internal services as gRPC metadata)"
    return None


def bind(request_id: str) -> None:
    """Make `request_id` the current task's (and the tasks it starts): logs, spans and internal calls."""
    REQUEST_ID.set(request_id)
    trace.get_current_span().set_attribute(SPAN_ATTRIBUTE, request_id)


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """The metadata carrying the current request id, and when tracing is on the current span's W3C trace
    context (OTEL_PROPAGATORS), to an internal call (None when there is neither)."""
    rid = REQUEST_ID.get()
    metadata = [(METADATA_KEY, rid)] if rid else []
    if tracing.active() is not None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata += carrier.items()
    return tuple(metadata) or None


class RequestIdInterceptor(aio.ServerInterceptor):
    """Binds the caller's `x-request-id` for the handler. A call without one is passed through untouched
    (health checks, probes): no wrapper, no cost."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        rid = next((v for k, v in handler_call_details.invocation_metadata or () if k == METADATA_KEY), None)
        if handler is None or handler.unary_unary is None or not rid or not isinstance(rid, str) or problem(rid):
            return handler
        inner = handler.unary_unary

        async def with_request_id(request, context):
            bind(rid)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            with_request_id, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
