"""Prometheus metrics shared by the three services.

Names follow Prometheus conventions (base units, `_total` counters, `_seconds` histograms); the RPC
metrics use the go-grpc-prometheus names so existing gRPC dashboards and alerts work unchanged.
Each service process exposes them over HTTP with `start_metrics_server`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

# Buckets sized for a millisecond-scale serving path (0.5 ms .. 5 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

GRPC_STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_service", "grpc_method"])
GRPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"])
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS)

STAGE_LATENCY = Histogram(
    "recsys_stage_duration_seconds", "Time spent in each stage of the Recommend pipeline.",
    ["stage"], buckets=LATENCY_BUCKETS)
CANDIDATES = Counter(
    "recsys_candidates_total", "Candidates proposed, by retrieval source.", ["source"])
RECOMMEND_RESULTS = Counter(
    "recsys_recommendations_total",
    "Recommend responses by outcome: ok, empty (no items), fallback (popularity order) or cold_start.",
    ["outcome"])
MODEL_INFO = Gauge(
    "recsys_model_info", "The model bundle a service is serving (value 1).",
    ["component", "version", "role"])
BUNDLE_CREATED = Gauge(
    "recsys_model_bundle_created_timestamp_seconds", "When the served bundle was trained (unix time).",
    ["component", "version"])
MODEL_RELOADS = Counter(
    "recsys_model_reloads_total", "Hot swaps to a new champion bundle, by result (ok or rejected).",
    ["component", "result"])
MODEL_QUALITY = Gauge(
    "recsys_model_quality", "Validation metrics recorded in the served bundle at training time.",
    ["component", "version", "metric"])
FEATURE_LAST_UPDATE = Gauge(
    "recsys_feature_last_update_timestamp_seconds",
    "When the feature store last applied a write (bundle load or event), unix time.")
FEATURE_EVENTS = Counter(
    "recsys_feature_events_total", "Interaction events applied to the feature store.")


_served: dict[tuple[str, str], str] = {}


def mark_serving(component: str, version: str, role: str, created: float) -> None:
    """Point the info and bundle-age metrics of (component, role) at `version`, dropping the previous one."""
    previous = _served.get((component, role))
    if previous and previous != version:
        MODEL_INFO.remove(component, previous, role)
        BUNDLE_CREATED.remove(component, previous)
    _served[(component, role)] = version
    MODEL_INFO.labels(component, version, role).set(1)
    BUNDLE_CREATED.labels(component, version).set(created)


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` (0 disables). Process metrics come from the default registry."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
