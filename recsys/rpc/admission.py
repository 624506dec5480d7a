"""Admission control for every server: what a call must satisfy before its handler runs.

A call is refused, quickly and counted (grpc_server_handled_total and recsys_grpc_server_rejected_total),
when the server already handles `max_in_flight` calls (RESOURCE_EXHAUSTED: shed instead of queued, so the
admitted calls keep their latency), when its deadline passed while it waited to start (DEADLINE_EXCEEDED:
the caller gave up, the work would be wasted), when its body is larger than `max_message_bytes`
(RESOURCE_EXHAUSTED) or when the body is not a valid message of the method's request type
(INVALID_ARGUMENT, not gRPC's UNKNOWN with an internal class name).

The checks that need the raw body run in the request deserializer (recsys.rpc.interceptor wraps it): an
overloaded server then sheds a call without even parsing it. The transport itself refuses bodies beyond
twice `max_message_bytes` (`transport_options`), so a body never costs more than that to receive; those
calls never reach Python and only the caller sees their RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from recsys.rpc.limits import SIZE_PROBLEMS, RequestLimits

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Cheap calls that must answer even under overload: probes, and the ranker's check of its dependencies'
# versions before it switches to a new champion.
EXEMPT_SERVICES = frozenset({"grpc.health.v1.Health", "recsys.v1.ModelVersions"})
# A call with less time than this left cannot do anything useful: refuse it before any work.
MIN_REMAINING_S = 0.0005


@dataclass(frozen=True)
class ServerLimits:
    """A server's bounds (settings `max_message_bytes`, `max_in_flight`; 0 in-flight = unbounded) and how
    long its drain after SIGTERM may take (`drain_delay_s`, `drain_grace_s`; recsys/rpc/server.py)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_in_flight: int = 0
    drain_delay_s: float = 0.0
    drain_grace_s: float = 10.0
    request: RequestLimits = field(default_factory=RequestLimits)  # sizes checked as a request is parsed

    @classmethod
    def of(cls, settings: object) -> ServerLimits:
        return cls(max_message_bytes=getattr(settings, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES),
                   max_in_flight=getattr(settings, "max_in_flight", 0),
                   drain_delay_s=getattr(settings, "drain_delay_s", 0.0),
                   drain_grace_s=getattr(settings, "drain_grace_s", 10.0),
                   request=RequestLimits.of(settings))

    def transport_options(self) -> list[tuple[str, int]]:
        """gRPC server options: the transport's hard ceiling is twice the limit, so bodies between the two
        reach the deserializer and are refused there with a message and a metric."""
        ceiling = 2 * self.max_message_bytes
        return [("grpc.max_receive_message_length", ceiling), ("grpc.max_send_message_length", ceiling)]


@dataclass(frozen=True)
class Rejected:
    """Stands in for a request that must not reach its handler: the status it gets and why."""

    code: grpc.StatusCode
    details: str
    reason: str  # the recsys_grpc_server_rejected_total label


class Admission:
    """Calls in flight on this server (its event loop thread only), bounded by `max_in_flight`."""

    def __init__(self, max_in_flight: int = 0):
        self.max_in_flight = max_in_flight
        self.count = 0

    @property
    def full(self) -> bool:
        return 0 < self.max_in_flight <= self.count

    def overloaded(self) -> Rejected:
        return Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"server overloaded: {self.count} calls in flight (max_in_flight {self.max_in_flight}); "
                        "retry later with backoff", "overloaded")


class ServiceTime:
    """A method's typical handling time (an exponentially weighted mean of its recent successful calls).
    While other calls are in flight, a call left with much less time than that is refused before it starts
    work (downstream calls included) that cannot finish in time. An idle server, or an estimate older than
    `STALE_S`, refuses only a deadline that has passed, so a slow first call cannot lock callers out."""

    ALPHA = 0.1
    SHARE = 0.5  # refuse when less than this share of the typical time is left
    STALE_S = 2.0

    def __init__(self) -> None:
        self.mean_s = 0.0
        self.updated = 0.0

    def observe(self, seconds: float) -> None:
        self.mean_s = seconds if not self.mean_s else self.mean_s + self.ALPHA * (seconds - self.mean_s)
        self.updated = time.monotonic()

    def refuse(self, remaining: float | None, busy: bool = False) -> Rejected | None:
        if remaining is None:
            return None
        needed = MIN_REMAINING_S
        if busy and time.monotonic() - self.updated < self.STALE_S:
            needed = max(needed, self.SHARE * self.mean_s)
        if remaining < needed:
            return Rejected(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"{remaining * 1000:.1f} ms of the deadline left when the call could start; calls take "
                            f"about {self.mean_s * 1000:.1f} ms now (the server is busy)", "deadline")
        return None


def deadline_passed(remaining: float | None) -> Rejected | None:
    """A call whose deadline passed (or nearly) before its handler started."""
    return ServiceTime().refuse(remaining)


def guarded_deserializer(deserialize: Callable[[bytes], Any] | None, request_name: str, limits: ServerLimits,
                         admission: Admission) -> Callable[[bytes], Any]:
    """The method's deserializer, refusing (as a `Rejected`) before parsing when the server is full or the
    body too large, and turning a body that does not parse, or a field over its size bound
    (recsys.rpc.limits.SIZE_PROBLEMS), into a clear INVALID_ARGUMENT."""
    size_problem = SIZE_PROBLEMS.get(request_name)

    def guarded(raw: bytes) -> Any:
        if admission.full:
            return admission.overloaded()
        if len(raw) > limits.max_message_bytes:
            return Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"request of {len(raw)} bytes is larger than max_message_bytes "
                            f"({limits.max_message_bytes})", "too_large")
        if deserialize is None:
            return raw
        try:
            message = deserialize(raw)
        except (DecodeError, ValueError, TypeError) as exc:
            return Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request body is not a valid {request_name} message ({exc})", "undecodable")
        if size_problem is not None and (problem := size_problem(message, limits.request)):
            return Rejected(grpc.StatusCode.INVALID_ARGUMENT, problem, "too_big_field")  # the message is freed now
        return message

    return guarded


def request_name(deserialize: Callable[[bytes], Any] | None) -> str:
    """'recsys.v1.RecommendRequest' for a generated message's FromString, else a generic name."""
    owner = getattr(deserialize, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "request"
