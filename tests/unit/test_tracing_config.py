"""Tracing from the standard OTEL_* variables (recsys/rpc/tracing.py) and the JSON log lines
(recsys/rpc/logs.py): off by default, clear errors for values the SDK would silently replace."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from recsys.rpc import tracing
from recsys.rpc.logs import TEXT_FORMAT, CallContext, configure_logging, json_formatter
from recsys.rpc.request_id import REQUEST_ID, bind, outgoing_metadata, problem


@pytest.fixture(autouse=True)
def no_provider():
    yield
    tracing.install(None)


@pytest.mark.parametrize("env", [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "otlp,none"},
                                 {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}])
def test_off_unless_an_exporter_is_named(env):
    assert tracing.configure_from_env("ranker_svc", env, global_provider=False) is None
    assert tracing.active() is None and tracing.server_interceptors() == []
    with tracing.client_span("/recsys.v1.FeatureStore/GetUserFeatures"):
        assert not trace.get_current_span().get_span_context().is_valid  # no span when off


def test_on_with_the_standard_variables():
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
           "OTEL_TRACES_SAMPLER_ARG": "0.25", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    provider = tracing.configure_from_env("ranker_svc", env, global_provider=False)
    try:
        assert provider is not None and tracing.active() is provider
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
        assert provider.resource.attributes["service.name"] == "ranker_svc"  # OTEL_SERVICE_NAME unset
        assert len(tracing.server_interceptors()) == 1
        with tracing.client_span("/recsys.v1.FeatureStore/GetUserFeatures"):
            assert dict(outgoing_metadata() or ())["traceparent"]  # the client span's context travels
    finally:
        tracing.shutdown()
    assert tracing.active() is None


def test_otel_service_name_wins(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "recsys-ranker")
    provider = tracing.configure_from_env("ranker_svc", {"OTEL_TRACES_EXPORTER": "console"}, global_provider=False)
    try:
        assert provider.resource.attributes["service.name"] == "recsys-ranker"
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER 'zipkin' is unknown"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "only grpc"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER 'sometimes'"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5%"},
     "OTEL_TRACES_SAMPLER_ARG must be a ratio"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "OTEL_TRACES_SAMPLER_ARG must be a ratio"),
])
def test_values_the_sdk_would_silently_replace_are_errors(env, message):
    with pytest.raises(tracing.TracingConfigError, match=message):
        tracing.configure_from_env("ranker_svc", env, global_provider=False)
    assert tracing.active() is None


def test_a_service_with_bad_tracing_or_log_settings_exits_with_the_reason():
    for args, env, message in ((["--log-format", "xml"], {}, "log_format must be one of text, json, got 'xml'"),
                               ([], {"OTEL_TRACES_EXPORTER": "zipkin"}, "feature_svc: OTEL_TRACES_EXPORTER 'zipkin'")):
        proc = subprocess.run([sys.executable, "-m", "feature_svc", *args], capture_output=True,
                              text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env})
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def _record(logger: logging.Logger, out: io.StringIO, emit) -> dict:
    handler = logging.StreamHandler(out)
    handler.addFilter(CallContext())
    handler.setFormatter(json_formatter())
    logger.addHandler(handler)
    try:
        emit()
    finally:
        logger.removeHandler(handler)
    return json.loads(out.getvalue().splitlines()[-1])


def test_json_lines_carry_what_is_known_and_nothing_else():
    logger = logging.getLogger("recsys.test.logs")
    logger.setLevel(logging.INFO)
    line = _record(logger, io.StringIO(), lambda: logger.info("loaded %d versions", 2))
    assert line["message"] == "loaded 2 versions" and line["level"] == "INFO" and line["logger"] == logger.name
    assert "request_id" not in line and "trace_id" not in line and line["time"].endswith("+00:00")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def in_a_request() -> None:
        token = REQUEST_ID.set("")
        try:
            with provider.get_tracer("t").start_as_current_span("call"):
                bind("req-7")
                try:
                    raise ValueError("bad row")
                except ValueError:
                    logger.exception("request failed", extra={"user": "u1"})
        finally:
            REQUEST_ID.reset(token)

    line = _record(logger, io.StringIO(), in_a_request)
    (span,) = exporter.get_finished_spans()
    assert line["request_id"] == "req-7" and line["user"] == "u1" and "ValueError: bad row" in line["exc_info"]
    assert line["trace_id"] == format(span.context.trace_id, "032x") and line["level"] == "ERROR"
    assert span.attributes["recsys.request_id"] == "req-7"


def test_text_lines_stay_as_they_were():
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("text", "warning")
        assert root.level == logging.WARNING and root.handlers[0].formatter._fmt == TEXT_FORMAT
        with pytest.raises(SystemExit, match="log_format must be one of text, json"):
            configure_logging("yaml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_request_ids_that_travel_as_metadata():
    assert problem("5f0c3a1e-req") is None and problem("a b~c") is None
    assert "at most 128" in problem("x" * 129) and "printable ASCII" in problem("naïve")
    token = REQUEST_ID.set("")
    try:
        assert outgoing_metadata() is None
        REQUEST_ID.set("r1")
        assert outgoing_metadata() == (("x-request-id", "r1"),)
    finally:
        REQUEST_ID.reset(token)
