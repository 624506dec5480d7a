"""Tracing and request ids across the three services (issue 11, item 9).

The services are hosted in-process (one background event loop) with an in-memory span exporter, so the
test reads every span the real gRPC servers and the ranker's real channels produced: one trace holds
the ranker's Recommend server span, its client spans to feature_svc and candidate_svc and their server
spans, each with its gRPC status code and the request id."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode

from candidate_svc.server import serve as serve_candidates
from candidate_svc.settings import CandidateSettings
from feature_svc.server import serve as serve_features
from feature_svc.settings import FeatureSettings
from ranker_svc.server import serve as serve_ranker
from ranker_svc.settings import RankerSettings
from recsys.bench_tracing import SpanSink
from recsys.cluster import free_port, start_cluster
from recsys.rpc import tracing
from recsys.rpc.logs import CallContext, json_formatter
from recsys.rpc.request_id import SPAN_ATTRIBUTE
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

RECOMMEND = "/recsys.v1.Recommender/Recommend"
CHILDREN = {"/recsys.v1.FeatureStore/GetUserFeatures": "feature", "/recsys.v1.FeatureStore/GetItemFeatures": "feature",
            "/recsys.v1.CandidateRetriever/Retrieve": "candidate"}
CODE = "rpc.grpc.status_code"
GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")


class Hosted:
    """feature_svc, candidate_svc and two ranker_svc in one background event loop: `ranker` served by the
    other two, `lonely` whose candidate_svc address has nobody listening."""

    def __init__(self, bundle: Path):
        self.ports = {name: free_port() for name in ("feature", "candidate", "ranker", "lonely")}
        common = {"host": "127.0.0.1", "metrics_port": 0, "bundle": [str(bundle)], "plaintext": True,
                  "stream": f"file://{tempfile.mkdtemp(prefix='recsys-stream-')}"}
        ranker = {**common, "feature_addr": self.address("feature"), "cache": "none", "exposures": False}
        self.services = [
            lambda ready: serve_features(FeatureSettings(port=self.ports["feature"], **common), ready),
            lambda ready: serve_candidates(CandidateSettings(port=self.ports["candidate"], **common), ready),
            lambda ready: serve_ranker(RankerSettings(port=self.ports["ranker"],
                                                      candidate_addr=self.address("candidate"), **ranker), ready),
            lambda ready: serve_ranker(RankerSettings(port=self.ports["lonely"], dependency_timeout_ms=300,
                                                      candidate_addr=f"127.0.0.1:{free_port()}", **ranker), ready),
        ]
        self.loop = asyncio.new_event_loop()
        self.tasks: list[asyncio.Task] = []
        self.failed: list[asyncio.Task] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def _run(self) -> None:
        async def main() -> None:
            events = [asyncio.Event() for _ in self.services]
            self.tasks = [asyncio.create_task(serve(e)) for serve, e in zip(self.services, events, strict=True)]
            started = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
            await asyncio.wait([started, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
            self.failed = [t for t in self.tasks if t.done()]  # a service that stopped during start-up
            self.ready.set()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        self.loop.run_until_complete(main())
        self.loop.close()

    def __enter__(self) -> Hosted:
        self.thread.start()
        assert self.ready.wait(120), "the in-process services did not start"
        if self.failed:
            self.__exit__()
            raise RuntimeError(f"a service stopped during start-up: {self.failed[0].exception()!r}")
        return self

    def __exit__(self, *exc) -> None:
        for t in self.tasks:
            self.loop.call_soon_threadsafe(t.cancel)
        self.thread.join(30)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource({"service.name": "recsys-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.fixture(scope="module")
def hosted(small_bundle: Path, spans) -> Iterator[Hosted]:
    with Hosted(small_bundle) as h:
        yield h


def recommend(address: str, **fields) -> tuple[grpc.StatusCode, pb.RecommendResponse | None, str]:
    with grpc.insecure_channel(address) as ch:
        try:
            resp = pb_grpc.RecommenderStub(ch).Recommend(pb.RecommendRequest(**fields), timeout=10)
            return grpc.StatusCode.OK, resp, ""
        except grpc.RpcError as exc:
            return exc.code(), None, exc.details()


def trace_of(spans: InMemorySpanExporter, request_id: str, expect: int) -> list[ReadableSpan]:
    """The spans of the trace whose Recommend span carries `request_id` (waits for `expect` of them)."""
    deadline = time.monotonic() + 5
    while True:
        done = list(spans.get_finished_spans())
        roots = [s for s in done if s.name == RECOMMEND and s.attributes.get(SPAN_ATTRIBUTE) == request_id]
        found = [s for s in done if roots and s.context.trace_id == roots[0].context.trace_id]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_one_trace_holds_the_ranker_span_and_its_feature_and_candidate_children(hosted, spans):
    code, resp, _ = recommend(hosted.address("ranker"), user_id="u1", k=5, request_id="trace-ok-1")
    assert code == grpc.StatusCode.OK and resp.items and resp.request_id == "trace-ok-1"
    found = trace_of(spans, "trace-ok-1", expect=7)
    (root,) = [s for s in found if s.name == RECOMMEND]
    assert root.kind == SpanKind.SERVER and root.parent is None
    assert root.attributes[CODE] == 0 and root.status.status_code != StatusCode.ERROR
    for method in CHILDREN:
        (client,) = [s for s in found if s.name == method and s.kind == SpanKind.CLIENT]
        (server,) = [s for s in found if s.name == method and s.kind == SpanKind.SERVER]
        assert client.parent.span_id == root.context.span_id, f"{method}: the client span is not the ranker's child"
        assert server.parent.span_id == client.context.span_id and server.parent.is_remote, \
            f"{method}: W3C trace context did not reach the server"
        assert client.attributes[CODE] == 0 and server.attributes[CODE] == 0, method
        assert server.attributes[SPAN_ATTRIBUTE] == "trace-ok-1", f"{method}: the request id did not travel"
    assert len(found) == 7, sorted(s.name for s in found)


def test_a_failed_dependency_call_is_an_error_span_in_the_callers_trace(hosted, spans):
    code, resp, details = recommend(hosted.address("lonely"), user_id="u2", k=5, request_id="trace-down-1")
    found = trace_of(spans, "trace-down-1", expect=4)
    (root,) = [s for s in found if s.name == RECOMMEND]
    (retrieve,) = [s for s in found if s.name.endswith("/Retrieve")]
    assert retrieve.kind == SpanKind.CLIENT and retrieve.parent.span_id == root.context.span_id
    assert retrieve.status.status_code == StatusCode.ERROR
    assert retrieve.attributes[CODE] in (grpc.StatusCode.UNAVAILABLE.value[0],
                                        grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert root.attributes[CODE] == code.value[0], details  # the ranker's span says what its caller got
    if code == grpc.StatusCode.OK:
        assert resp.degraded
    user = [s for s in found if s.name.endswith("/GetUserFeatures") and s.kind == SpanKind.SERVER]
    assert user and user[0].attributes[CODE] == 0  # feature_svc did answer


def test_a_rejected_call_has_its_status_code_on_its_span(hosted, spans):
    code, _, details = recommend(hosted.address("ranker"), user_id="u1", k=0)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "k must be" in details
    deadline = time.monotonic() + 5
    while not (bad := [s for s in spans.get_finished_spans() if s.name == RECOMMEND
                       and s.attributes.get(CODE) == grpc.StatusCode.INVALID_ARGUMENT.value[0]]):
        assert time.monotonic() < deadline, "no span with INVALID_ARGUMENT"
        time.sleep(0.05)
    # OTel's gRPC conventions: a caller's mistake is not a server error (UNSET); UNAVAILABLE, INTERNAL... are
    assert bad[-1].status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("request_id", ["é-not-ascii", "x" * 129, "line\nbreak"])
def test_a_request_id_that_cannot_travel_as_metadata_is_rejected(hosted, request_id):
    code, _, details = recommend(hosted.address("ranker"), user_id="u1", k=5, request_id=request_id)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in details


def test_a_generated_request_id_travels_too(hosted, spans):
    code, resp, _ = recommend(hosted.address("ranker"), user_id="u3", k=5)
    assert code == grpc.StatusCode.OK and len(resp.request_id) == 32
    found = trace_of(spans, resp.request_id, expect=7)
    servers = [s for s in found if s.kind == SpanKind.SERVER and s.name != RECOMMEND]
    assert len(servers) == 3 and {s.attributes[SPAN_ATTRIBUTE] for s in servers} == {resp.request_id}


def test_health_checks_are_not_traced(hosted, spans):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(hosted.address("feature")) as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert not [s for s in spans.get_finished_spans() if "Health" in s.name]


def test_json_log_lines_carry_the_request_id_and_the_trace_id(hosted, spans):
    """The ranker's access log (DEBUG), formatted as the services do with log_format=json."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(CallContext())
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("ranker_svc")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        code, _, _ = recommend(hosted.address("ranker"), user_id="u4", k=5, request_id="trace-log-1")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert code == grpc.StatusCode.OK
    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # every line is one JSON object
    (access,) = [x for x in lines if x.get("request_id") == "trace-log-1"]
    (root,) = [s for s in trace_of(spans, "trace-log-1", expect=7) if s.name == RECOMMEND]
    assert access["trace_id"] == format(root.context.trace_id, "032x")
    assert access["span_id"] == format(root.context.span_id, "016x")
    assert access["level"] == "DEBUG" and access["logger"] == "ranker_svc"
    assert access["message"].startswith("request_id=trace-log-1 ") and access["time"].endswith("+00:00")


def test_the_services_as_deployed_export_one_trace_over_otlp_and_log_json(small_bundle, tmp_path):
    """One process per service, tracing from the OTEL_* variables and log_format=json: the spans of one
    Recommend reach an OTLP collector as one trace over three service names; every log line is JSON and
    the ranker's access log line names the request and its trace."""
    json_logs = ["--log-format", "json"]
    extra = {"feature_svc": json_logs, "candidate_svc": json_logs,
             "ranker_svc": [*json_logs, "--cache", "none", "--no-exposures"]}
    with SpanSink(keep=True) as sink:
        env = sink.env() | {"OTEL_BSP_SCHEDULE_DELAY": "100", "RECSYS_LOG_LEVEL": "DEBUG"}
        with start_cluster(small_bundle, port=0, metrics=False, extra=extra, env=env, log_dir=tmp_path) as cluster:
            code, resp, details = recommend(cluster.target, user_id="u5", k=5, request_id="otlp-1")
            assert code == grpc.StatusCode.OK, details
            sink.wait_for(7, timeout_s=10)
    spans = [(rs.resource, span) for req in sink.received for rs in req.resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    (root,) = [span for _, span in spans if span.name == RECOMMEND]
    trace = [(res, span) for res, span in spans if span.trace_id == root.trace_id]
    services = {a.value.string_value for res, _ in trace for a in res.attributes if a.key == "service.name"}
    assert services == {"ranker_svc", "feature_svc", "candidate_svc"} and len(trace) == 7, services
    trace_id = root.trace_id.hex()
    # json.loads fails on a text line; gRPC's C core writes its own (glog-style "I1203 19:22:15...") lines
    lines = {name: [json.loads(x) for x in (tmp_path / f"{name}.log").read_text().splitlines()
                    if x.strip() and not GLOG_LINE.match(x)]
             for name in ("feature_svc", "candidate_svc", "ranker_svc")}
    assert all(lines.values())
    assert all({"time", "level", "logger", "message"} <= set(x) for v in lines.values() for x in v)
    (access,) = [x for x in lines["ranker_svc"] if x.get("request_id") == "otlp-1" and x["logger"] == "ranker_svc"]
    assert access["trace_id"] == trace_id and access["message"].startswith("request_id=otlp-1 ")
