"""The gRPC server under every service (used by recsys/rpc/host.py): grpc.health.v1, reflection and metrics,
draining in-flight calls on SIGTERM/SIGINT before exiting."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

import faiss
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from recsys.metrics import start_metrics_server
from recsys.rpc.interceptor import MetricsInterceptor

log = logging.getLogger(__name__)

LIVENESS = "liveness"  # health service name for liveness probes: up as long as the event loop runs

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
    # Close long-lived client connections now and then (gracefully), so callers re-resolve and spread over
    # replicas added by the autoscaler instead of sticking to the pods they first connected to.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


class Server:
    """One gRPC server: register servicers, then `serve()` until a signal (or `stop()`)."""

    def __init__(self, host: str, port: int, metrics_port: int = 0):
        self.server = aio.server(interceptors=[MetricsInterceptor()], options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.address = f"{host}:{port}"
        self.metrics_port = metrics_port
        self.service_names: list[str] = [health.SERVICE_NAME, reflection.SERVICE_NAME]
        self.port = 0
        self._stop = asyncio.Event()

    def add(self, register: Callable[[object, aio.Server], None], servicer: object, service_name: str) -> None:
        register(servicer, self.server)
        self.service_names.append(service_name)

    async def set_serving(self, serving: bool) -> None:
        """Readiness: "" and every service name. The "liveness" service stays SERVING while the process
        runs, so liveness/startup probes do not restart a service that is only waiting for a model."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def start(self, serving: bool = True) -> int:
        reflection.enable_server_reflection(self.service_names, self.server)
        self.port = self.server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self.address}")
        start_metrics_server(self.metrics_port)
        await self.server.start()
        await self.set_serving(serving)
        log.info("serving %s on port %d (metrics on %s)", ", ".join(self.service_names[2:]), self.port,
                 self.metrics_port or "off")
        return self.port

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, grace: float = 5.0) -> None:
        """Start, wait for SIGTERM/SIGINT or stop(), report NOT_SERVING, drain, exit."""
        if threading.current_thread() is threading.main_thread():  # a test may host services in a thread
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        if not self.port:
            await self.start()
        try:
            await self._stop.wait()
        finally:  # a signal, stop(), or the hosting task cancelled (services hosted in-process)
            await self.set_serving(False)
            await self.server.stop(grace)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run a service's main coroutine; RECSYS_LOG_LEVEL=DEBUG turns on ranker_svc's per-request access log."""
    logging.basicConfig(level=os.environ.get("RECSYS_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A request's matrix work is tiny (hundreds of rows): BLAS/OpenMP thread pools only add hand-off
    # latency and contend with the event loop. Scale with processes (replicas), not threads.
    # Background threads (stream consumers applying batches, the exposure writer) hold the GIL in bursts;
    # with the default 5 ms switch interval a request on the event loop can wait that long behind one.
    sys.setswitchinterval(0.0005)
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        asyncio.run(main())
