"""A server interceptor recording RED metrics for every unary RPC (go-grpc-prometheus names) and counting
the calls in flight, which background writers yield to (recsys.rpc.priority)."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc import aio

from recsys.metrics import GRPC_HANDLED, GRPC_LATENCY, GRPC_STARTED
from recsys.rpc.priority import IN_FLIGHT


def _split(method: str) -> tuple[str, str]:
    # "/recsys.v1.Recommender/Recommend" -> ("recsys.v1.Recommender", "Recommend")
    _, service, name = method.split("/", 2)
    return service, name


class MetricsInterceptor(aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split(handler_call_details.method)
        inner = handler.unary_unary

        async def observed(request, context: aio.ServicerContext):
            GRPC_STARTED.labels(service, method).inc()
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            IN_FLIGHT.enter()
            try:
                response = await inner(request, context)
                code = context.code() or grpc.StatusCode.OK
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
                IN_FLIGHT.leave()
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                GRPC_HANDLED.labels(service, method, name).inc()
                GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - t0)

        return grpc.unary_unary_rpc_method_handler(
            observed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
