"""The bench's tracing figure: single-client Recommend p50/p99 with tracing off and on at full sampling.

Clusters hold the same bundle: one with OTEL_TRACES_EXPORTER=none, one with always_on sampling and the
OTLP/gRPC exporter (batch processor, default OTEL_BSP_* settings) sending every span of the three
services to `SpanSink`, a minimal OTLP collector in a process of its own (in the measuring client's
process, receiving and parsing the exports took that process's interpreter lock from the client's calls:
a cost of the measurement, not of tracing, since a collector runs elsewhere), and (by default) one
sampling 5% of traces. Rounds alternate between them (and their order), so drift on a shared machine hits all alike.
The ranker's list cache is off, so every call makes its three internal calls: seven spans per
Recommend, the most tracing can cost (`cache=True` measures the default configuration instead).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from concurrent import futures
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from rich.console import Console

from recsys.cluster import start_cluster
from recsys.latency import sequential, summarize

_CACHE_OFF = {"ranker_svc": ["--cache", "none"]}
ARM = "recsys.bench.arm"  # a resource attribute telling the clusters' spans apart


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector on loopback that counts what it receives (and keeps it if asked)."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.spans = 0
        self.by_tag: Counter[str] = Counter()  # spans per value of the resource attribute ARM
        self.received: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def Export(self, request, context):  # noqa: N802 (the OTLP method name)
        with self._lock:
            for rs in request.resource_spans:
                n = sum(len(ss.spans) for ss in rs.scope_spans)
                self.spans += n
                tag = next((a.value.string_value for a in rs.resource.attributes if a.key == ARM), "")
                self.by_tag[tag] += n
            if self.keep:
                self.received.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, sampler: str = "always_on", tag: str = "") -> dict[str, str]:
        """The OTEL_* variables that send a service's spans here (counted under `tag` in by_tag)."""
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": sampler,
               "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        return env | ({"OTEL_RESOURCE_ATTRIBUTES": f"{ARM}={tag}"} if tag else {})

    def wait_for(self, spans: int, timeout_s: float) -> int:
        """Wait until `spans` spans have arrived (a batch processor exports every OTEL_BSP_SCHEDULE_DELAY)."""
        deadline = time.monotonic() + timeout_s
        while self.spans < spans and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.spans

    def __enter__(self) -> SpanSink:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1).wait()


def _serve_sink(conn: Connection) -> None:
    """The collector's process: sends its port, then, when told to stop, the spans it counted per tag. At the
    lowest CPU priority: it stands for a collector elsewhere, and its parsing must not take the cores from
    the services it measures (they export; it only receives)."""
    os.nice(19)
    with SpanSink() as sink:
        conn.send(sink.port)
        conn.recv()
        conn.send(dict(sink.by_tag))


class SinkProcess:
    """A SpanSink in a child process: the OTEL_* variables that reach it, and its counts at the end."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_sink, args=(child,), daemon=True)

    def __enter__(self) -> SinkProcess:
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the span collector process did not start")
        self.port = self._conn.recv()
        return self

    env = SpanSink.env
    endpoint = SpanSink.endpoint

    def counts(self) -> dict[str, int]:
        """Stop the collector; the spans it received per tag."""
        self._conn.send("stop")
        return self._conn.recv() if self._conn.poll(30) else {}

    def __exit__(self, *exc) -> None:
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()


def tracing_cost(bundle: Path, users: list[str], rng: random.Random, console: Console,
                 requests: int = 250, rounds: int = 6, cache: bool = False, ratio: float | None = 0.05) -> dict:
    """p50/p99 of single-client Recommend, tracing off vs on (always_on, OTLP to SpanSink); with `ratio`
    also a third cluster sampling that share of traces (the manifests' default when tracing is on). With
    `cache` the ranker's list cache is on (a hit makes no internal call: fewer spans)."""
    extra = None if cache else _CACHE_OFF
    arms = {"off": {"OTEL_TRACES_EXPORTER": "none"}, "on": None}
    if ratio is not None:
        arms[f"{ratio:.0%}"] = None
    lat: dict[str, list[float]] = {name: [] for name in arms}
    errors = dict.fromkeys(arms, 0)
    with SinkProcess() as sink, contextlib.ExitStack() as clusters:
        arms["on"] = sink.env(tag="on")
        if ratio is not None:
            arms[f"{ratio:.0%}"] = sink.env("parentbased_traceidratio", f"{ratio:.0%}") | {
                "OTEL_TRACES_SAMPLER_ARG": str(ratio)}
        with console.status(f"tracing cost: starting {len(arms)} clusters ({', '.join(arms)})"):
            targets = {name: clusters.enter_context(start_cluster(bundle, port=0, metrics=False, extra=extra,
                                                                  env=env)).target for name, env in arms.items()}
        for target in targets.values():
            sequential(target, [rng.choice(users) for _ in range(50)])  # warm-up
        for r in range(rounds):
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                console.status(f"tracing cost: round {r + 1}/{rounds}, tracing {name}")
                got, failed = sequential(targets[name], [rng.choice(users) for _ in range(requests)])
                lat[name] += got
                errors[name] += failed
        clusters.close()  # stopped: each service flushed its spans as it exited
        exported = sink.counts()
    out: dict = {name: summarize(v) | {"errors": errors[name]} for name, v in lat.items()}
    for name in arms:
        if name != "off":
            out[name]["p50_cost_pct"] = 100.0 * (out[name]["p50_ms"] / out["off"]["p50_ms"] - 1)
            out[name]["p99_cost_pct"] = 100.0 * (out[name]["p99_ms"] / out["off"]["p99_ms"] - 1)
    out["p50_cost_ms"] = out["on"]["p50_ms"] - out["off"]["p50_ms"]
    out["p99_cost_ms"] = out["on"]["p99_ms"] - out["off"]["p99_ms"]
    out["p99_cost_pct"] = out["on"]["p99_cost_pct"]
    calls = 51 + rounds * (requests + 1)  # per cluster; sequential() makes one extra call to warm its channel
    for name, spans in exported.items():
        out[name] |= {"spans_exported": spans, "spans_per_call": spans / calls}
    out["setup"] = (f"cache {'on' if cache else 'off'}; on = always_on"
                    + (f", {ratio:.0%} = parentbased_traceidratio {ratio}" if ratio is not None else "")
                    + f"; OTLP/gRPC batch export to an in-process collector; {rounds} interleaved rounds of "
                    f"{requests} calls")
    return out
