"""A server interceptor recording RED metrics for every unary RPC (go-grpc-prometheus names), counting the
calls in flight, which background writers yield to (recsys.rpc.priority), and refusing the calls that must
not run (recsys.rpc.admission): over max_in_flight, past their deadline, too large or undecodable. Refused
calls are counted like any other, so grpc_server_handled_total includes them."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc import aio

from recsys.metrics import GRPC_HANDLED, GRPC_LATENCY, GRPC_REJECTED, GRPC_STARTED
from recsys.rpc.admission import (
    EXEMPT_SERVICES,
    Admission,
    Rejected,
    ServerLimits,
    ServiceTime,
    guarded_deserializer,
    request_name,
)
from recsys.rpc.priority import IN_FLIGHT, WRITE_METHODS


def _split(method: str) -> tuple[str, str]:
    # "/recsys.v1.Recommender/Recommend" -> ("recsys.v1.Recommender", "Recommend")
    _, service, name = method.split("/", 2)
    return service, name


class MetricsInterceptor(aio.ServerInterceptor):
    def __init__(self, limits: ServerLimits | None = None):
        self.limits = limits or ServerLimits()
        self.admission = Admission(self.limits.max_in_flight)
        self._unbounded = Admission(0)
        self._times: dict[str, ServiceTime] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split(handler_call_details.method)
        inner = handler.unary_unary
        admission = self.admission if service not in EXEMPT_SERVICES else self._unbounded
        if admission.full:  # shed before even receiving the body: the cheapest refusal gRPC allows
            return _shed(service, method, admission.overloaded(), handler.response_serializer)
        typical = self._times.setdefault(handler_call_details.method, ServiceTime())
        read = handler_call_details.method not in WRITE_METHODS  # writes yield to reads, not the reverse

        async def observed(request, context: aio.ServicerContext):
            GRPC_STARTED.labels(service, method).inc()
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            rejected = (request if isinstance(request, Rejected)
                        else typical.refuse(context.time_remaining(), busy=admission.count > 0))
            if rejected is None and admission.full:
                rejected = admission.overloaded()
            if rejected is not None:
                await _refuse(service, method, rejected, context, t0)
            if read:
                IN_FLIGHT.enter()
            admission.count += 1
            try:
                response = await inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                if code == grpc.StatusCode.OK:
                    typical.observe(time.perf_counter() - t0)
                return response
            except asyncio.CancelledError:
                # gRPC cancels the handler when the caller's deadline passes or the caller goes away.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                admission.count -= 1
                if read:
                    IN_FLIGHT.leave()
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                GRPC_HANDLED.labels(service, method, name).inc()
                GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - t0)

        deserialize = guarded_deserializer(handler.request_deserializer, request_name(handler.request_deserializer),
                                           self.limits, admission)
        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=deserialize, response_serializer=handler.response_serializer)


async def _refuse(service: str, method: str, rejected: Rejected, context: aio.ServicerContext, t0: float) -> None:
    GRPC_REJECTED.labels(service, method, rejected.reason).inc()
    GRPC_HANDLED.labels(service, method, rejected.code.name).inc()
    GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - t0)
    await context.abort(rejected.code, rejected.details)


def _shed(service: str, method: str, rejected: Rejected, response_serializer) -> grpc.RpcMethodHandler:
    """A handler that refuses without reading the request (gRPC's stream-unary form reads only on demand)."""

    async def shed(requests, context: aio.ServicerContext):
        GRPC_STARTED.labels(service, method).inc()
        await _refuse(service, method, rejected, context, time.perf_counter())

    return grpc.stream_unary_rpc_method_handler(shed, response_serializer=response_serializer)
