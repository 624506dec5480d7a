"""OpenTelemetry tracing of the services' RPCs, configured by the standard `OTEL_*` variables.

Off unless OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`, or any registered
`opentelemetry_traces_exporter` entry point): with it unset or `none` no provider is built and no
interceptor is installed, so tracing costs nothing. When on, the official gRPC instrumentation traces
every server call (health and reflection excepted); `client_span` traces the ranker's calls to its
dependencies (the instrumentation's span shape, without its aio interceptor's cost), carrying W3C trace
context (`traceparent`, OTEL_PROPAGATORS) in the metadata. The sampler comes from
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (an unknown name or a bad ratio is an error here, where
the SDK would silently sample everything); the OTLP exporter reads OTEL_EXPORTER_OTLP_* itself, the
batch processor OTEL_BSP_*; the resource OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (service.name
defaults to the service's own name).

Exporting is paced (`PacedExporter`): the batch processor's thread encodes spans in Python, and a whole
batch of 512 at once held the interpreter lock for tens of milliseconds in the middle of a request, which
was the p99 cost of tracing; slices of `EXPORT_SLICE` spans, each sent when no call is in flight, are not.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_SYSTEM,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from recsys.rpc.priority import IN_FLIGHT, InFlight

log = logging.getLogger(__name__)

# Probes and tooling, not requests: never traced (OTEL_PYTHON_GRPC_EXCLUDED_SERVICES adds more).
UNTRACED = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection")
_RATIO = {"traceidratio": TraceIdRatioBased, "parentbased_traceidratio": ParentBasedTraceIdRatio}
_FIXED = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF, "parentbased_always_on": ParentBased(ALWAYS_ON),
          "parentbased_always_off": ParentBased(ALWAYS_OFF)}

_provider: TracerProvider | None = None
_tracer: Tracer | None = None

EXPORT_SLICE = 32  # spans per export call: about a millisecond of encoding
# Longer than a request usually lasts, so a slice nearly always finds the gap between two; under a load
# with no gap at all a slice still goes every EXPORT_WAIT_S: ~1,500 spans/s, about 500 Recommend/s.
EXPORT_WAIT_S = 0.02


class TracingConfigError(ValueError):
    """An OTEL_* variable with a value this service cannot honour (the message names it)."""


def exporter_names(env: dict[str, str] | None = None) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER asks for; [] = tracing off (unset, `none`, OTEL_SDK_DISABLED)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    return [] if not names or "none" in names else names


def sampler_from_env(env: dict[str, str] | None = None) -> Sampler:
    env = os.environ if env is None else env
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name in _FIXED:
        return _FIXED[name]
    if name not in _RATIO:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER {name!r} is unknown (known: {', '.join([*_FIXED, *_RATIO])})")
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
    try:
        ratio = float(raw)
    except ValueError:
        ratio = float("nan")
    if not 0.0 <= ratio <= 1.0:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1] for {name}, got {raw!r}")
    return _RATIO[name](ratio)


class PacedExporter(SpanExporter):
    """Hands `inner` a batch in slices of `slice_size` spans, each once the process has no call in flight
    (or after `max_wait_s`): the export then runs between requests, not inside one."""

    def __init__(self, inner: SpanExporter, slice_size: int = EXPORT_SLICE, max_wait_s: float = EXPORT_WAIT_S,
                 gate: InFlight = IN_FLIGHT):
        self.inner, self.slice_size, self.max_wait_s, self.gate = inner, slice_size, max_wait_s, gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = SpanExportResult.SUCCESS
        for start in range(0, len(spans), self.slice_size):
            self.gate.yield_to_requests(self.max_wait_s)
            if self.inner.export(spans[start:start + self.slice_size]) is not SpanExportResult.SUCCESS:
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _exporter(name: str, env: dict[str, str]) -> SpanExporter:
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        if protocol != "grpc":
            raise TracingConfigError(f"OTLP protocol {protocol!r} is not installed: only grpc "
                                     "(OTEL_EXPORTER_OTLP_PROTOCOL=grpc, the default)")
        name = "otlp_proto_grpc"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        known = sorted({"otlp", *(e.name for e in entry_points(group="opentelemetry_traces_exporter"))})
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER {name!r} is unknown (known: none, {', '.join(known)})")
    return next(iter(found)).load()()


def configure_from_env(service: str, env: dict[str, str] | None = None,
                       global_provider: bool = True) -> TracerProvider | None:
    """Tracing for this process as the OTEL_* variables say (None: off). Installs it for the servers and
    channels created afterwards and (once per process: the API allows no second) as the global provider."""
    env = dict(os.environ if env is None else env)
    names = exporter_names(env)
    if not names:
        install(None)
        return None
    sampler = sampler_from_env(env)
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(sampler=sampler, resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(PacedExporter(_exporter(name, env))))
    install(provider)
    if global_provider:
        trace.set_tracer_provider(provider)
    log.info("tracing on: service.name=%s, exporters %s, sampler %s", resource.attributes[SERVICE_NAME],
             ",".join(names), sampler.get_description())
    return provider


def install(provider: TracerProvider | None) -> None:
    """Use `provider` for the servers and calls from now on (None: no tracing). Tests install one with
    an in-memory exporter; several in-process services then share it."""
    global _provider, _tracer
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer(__name__)


def active() -> TracerProvider | None:
    return _provider


def shutdown() -> None:
    """Flush the spans still buffered (at exit, after the drain)."""
    if _provider is not None:
        _provider.shutdown()
    install(None)


def _server_filter() -> Callable[[object], bool]:
    """Whether a call is traced. A prefix test: the instrumentation's own service_name() filters cost
    ~0.2 ms a call (isinstance against ABCs, path normalisation), more than the span itself."""
    extra = [s.strip() for s in os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",") if s.strip()]
    prefixes = tuple(f"/{s}/" for s in (*UNTRACED, *extra))

    def traced(details) -> bool:
        method = details.method
        return not (method.decode() if isinstance(method, bytes) else method).startswith(prefixes)

    return traced


def server_interceptors() -> list:
    """The gRPC instrumentation's server interceptor, first in a server's chain so its span covers the
    others (shed and rejected calls included); [] when tracing is off."""
    if _provider is None:
        return []
    return [aio_server_interceptor(tracer_provider=_provider, filter_=_server_filter())]


@contextlib.contextmanager
def client_span(method: str) -> Iterator[None]:
    """A CLIENT span around one call to another service (`method` = "/package.Service/Method"), current
    while it runs so that `outgoing_metadata()` sends its `traceparent`; nothing when tracing is off.
    Same name and attributes as the official instrumentation's client spans, whose aio interceptor costs
    ~0.2 ms a call in grpc's interceptor machinery (extra tasks per call) where this costs ~0.03 ms."""
    if _tracer is None:
        yield
        return
    service, name = method.lstrip("/").split("/", 1)
    attributes = {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name,
                  RPC_GRPC_STATUS_CODE: grpc.StatusCode.OK.value[0]}
    with _tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        try:
            yield
        except grpc.RpcError as exc:
            span.set_attribute(RPC_GRPC_STATUS_CODE, exc.code().value[0])
            span.set_status(Status(StatusCode.ERROR, f"{exc.code().name}: {exc.details()}"))
            raise
        except BaseException as exc:  # cancelled with its caller
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
