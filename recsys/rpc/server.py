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

from recsys.child_process import die_with_parent
from recsys.metrics import start_metrics_server
from recsys.rpc.admission import ServerLimits
from recsys.rpc.interceptor import MetricsInterceptor
from recsys.rpc.logs import configure_logging
from recsys.rpc.request_id import RequestIdInterceptor
from recsys.rpc.security import Security
from recsys.rpc.tracing import TracingConfigError, configure_from_env, server_interceptors
from recsys.rpc.tracing import shutdown as shutdown_tracing

log = logging.getLogger(__name__)

LIVENESS = "liveness"  # health service name for liveness probes: up as long as the event loop runs

# Message size ceilings come from the server's limits (recsys/rpc/admission.py, `max_message_bytes`).
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
    # Close long-lived client connections now and then (gracefully), so callers re-resolve and spread over
    # replicas added by the autoscaler instead of sticking to the pods they first connected to.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


class Server:
    """One gRPC server: register servicers, then `serve()` until a signal (or `stop()`)."""

    def __init__(self, host: str, port: int, metrics_port: int = 0, security: Security | None = None,
                 limits: ServerLimits | None = None):
        # TLS, the health-only plaintext port and the caller checks (recsys/rpc/auth.py); default plaintext.
        self.security = security or Security()
        self._health_server: aio.Server | None = None
        self.limits = limits or ServerLimits()
        # Tracing first (when on): its span covers the calls the other interceptors reject.
        self.server = aio.server(interceptors=[*server_interceptors(), RequestIdInterceptor(),
                                               MetricsInterceptor(self.limits), *self.security.interceptors],
                                 options=SERVER_OPTIONS + self.limits.transport_options())
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.host = host
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
        credentials = self.security.server_credentials()
        self.port = (self.server.add_insecure_port(self.address) if credentials is None
                     else self.server.add_secure_port(self.address, credentials))
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self.address}")
        start_metrics_server(self.metrics_port, self.host)
        await self.server.start()
        await self._start_health_port()
        self.security.start()
        await self.set_serving(serving)
        log.info("serving %s on port %d (metrics on %s)", ", ".join(self.service_names[2:]), self.port,
                 self.metrics_port or "off")
        return self.port

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Start, wait for SIGTERM/SIGINT or stop(), then drain and return: report NOT_SERVING (clients that
        watch health stop sending here at once), keep taking calls for `drain_delay_s` (those already routed
        here by a load balancer that has not noticed yet), then refuse new calls and give the ones in flight
        `drain_grace_s` to finish."""
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
            if self._stop.is_set() and self.limits.drain_delay_s > 0:
                log.info("draining: NOT_SERVING, taking calls for %.1f s more", self.limits.drain_delay_s)
                await asyncio.sleep(self.limits.drain_delay_s)
            self.security.stop()
            await self.server.stop(self.limits.drain_grace_s)
            if self._health_server is not None:  # probes see NOT_SERVING until the end
                await self._health_server.stop(0)

    async def _start_health_port(self) -> None:
        """A plaintext port with grpc.health.v1 only (the same statuses): kubelet's gRPC probes cannot speak
        TLS. It reveals nothing but SERVING / NOT_SERVING."""
        if not self.security.health_port:
            return
        self._health_server = aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        if self._health_server.add_insecure_port(f"{self.host}:{self.security.health_port}") == 0:
            raise OSError(f"cannot bind the health port {self.host}:{self.security.health_port}")
        await self._health_server.start()


def event_loop_runner(name: str) -> Callable[[Awaitable[None]], None]:
    """`asyncio.run` or uvloop's. gRPC's asyncio stack runs on any loop (its poller thread wakes the loop
    through a socket); on 2 cores uvloop took a no-op call's p99 from 1.2-2.5 ms to 0.6-0.7 ms."""
    if name == "asyncio":
        return asyncio.run
    if name == "uvloop":
        import uvloop

        return uvloop.run
    raise SystemExit(f"event_loop must be uvloop or asyncio, got {name!r}")


def run(main: Callable[[], Awaitable[None]], service: str = "recsys", log_format: str = "text",
        event_loop: str = "asyncio") -> None:
    """Run a service's main coroutine on `event_loop`, its logs in `log_format` (recsys/rpc/logs.py) and its
    tracing as the OTEL_* variables say (recsys/rpc/tracing.py); RECSYS_LOG_LEVEL=DEBUG turns on ranker_svc's
    access log."""
    run_loop = event_loop_runner(event_loop)
    die_with_parent()  # when started by `recsys up` or a test (recsys/cluster.py)
    configure_logging(log_format, os.environ.get("RECSYS_LOG_LEVEL", "INFO"))
    try:
        configure_from_env(service)
    except TracingConfigError as exc:
        raise SystemExit(f"{service}: {exc}") from exc
    # A request's matrix work is tiny (hundreds of rows): BLAS/OpenMP thread pools only add hand-off
    # latency and contend with the event loop. Scale with processes (replicas), not threads.
    # Background threads (stream consumers applying batches, the exposure writer) hold the GIL in bursts;
    # with the default 5 ms switch interval a request on the event loop can wait that long behind one.
    sys.setswitchinterval(0.0005)
    with threadpool_limits(1):
        faiss.omp_set_num_threads(1)
        try:
            run_loop(main())
        finally:
            shutdown_tracing()  # the spans still buffered, after the drain
