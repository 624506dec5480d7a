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
GRPC_REJECTED = Counter(
    "recsys_grpc_server_rejected_total",
    "Calls refused before their handler ran (also in grpc_server_handled_total), by reason: overloaded "
    "(max_in_flight, RESOURCE_EXHAUSTED), deadline (passed while queued), too_large (max_message_bytes), "
    "undecodable (not a valid request message, INVALID_ARGUMENT) or too_big_field (an id, map or list over "
    "its size setting, INVALID_ARGUMENT).", ["grpc_service", "grpc_method", "reason"])

STAGE_LATENCY = Histogram(
    "recsys_stage_duration_seconds", "Time spent in each stage of the Recommend pipeline.",
    ["stage"], buckets=LATENCY_BUCKETS)
CANDIDATES = Counter(
    "recsys_candidates_total", "Candidates proposed, by retrieval source.", ["source"])
RECOMMEND_DEGRADED = Counter(
    "recsys_recommend_degraded_total",
    "Recommend answers served without a dependency, by the dependency that failed and what answered: "
    "last_good (the user's last good list) or popular (the bundle's popularity order).",
    ["dependency", "source"])
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


# -- the event stream, its consumers, exposures and the per-user cache (issue 9) ----------------------
FEEDBACK_EVENTS = Counter(
    "recsys_feedback_events_total",
    "Events received by Feedback/Send, by outcome: accepted, duplicate or rejected.", ["outcome"])
STREAM_APPEND_FAILURES = Counter(
    "recsys_stream_append_failures_total",
    "Appends the event stream could not persist (Send answered UNAVAILABLE, or exposures dropped).", ["producer"])
EXPOSURES = Counter(
    "recsys_exposures_total", "Recommend responses logged to the event stream as exposures.")
EXPOSURES_DROPPED = Counter(
    "recsys_exposures_dropped_total",
    "Exposures not logged, by reason: queue_full (the bounded queue overflowed) or stream_error.", ["reason"])
CONSUMER_LAG = Gauge(
    "recsys_stream_consumer_lag", "Entries of the event stream a consumer group has not acknowledged yet.",
    ["group"])
CONSUMER_APPLIED = Counter(
    "recsys_stream_consumer_applied_total", "Stream entries a consumer group applied and acknowledged.", ["group"])
DEAD_LETTERS = Counter(
    "recsys_stream_dead_letters_total",
    "Stream entries moved to the dead-letter stream after repeated failures, by consumer group.", ["group"])
EVENT_VISIBLE = Histogram(
    "recsys_event_visible_seconds",
    "Time from an event's acceptance by the stream to its effect being visible, by consumer group.",
    ["group"], buckets=LATENCY_BUCKETS)
EXPERIMENT_REQUESTS = Counter(
    "recsys_experiment_requests_total",
    "Recommend answers per experiment arm, by outcome: ok, empty, fallback, error; forced (QA) ones apart.",
    ["experiment", "arm", "outcome", "forced"])
EXPERIMENT_LATENCY = Histogram(
    "recsys_experiment_request_duration_seconds", "Recommend latency per experiment arm (not forced ones).",
    ["experiment", "arm"], buckets=LATENCY_BUCKETS)
EXPERIMENT_IMPRESSIONS = Counter(
    "recsys_experiment_impressions_total", "Items shown in Recommend answers, per experiment arm (not forced ones).",
    ["experiment", "arm"])
EXPERIMENT_STREAM_IMPRESSIONS = Counter(
    "recsys_experiment_stream_impressions_total",
    "Items shown per experiment arm, counted from the exposures on the event stream once across replicas "
    "(forced and shadow ones left out): the denominator of the online CTR.", ["experiment", "arm"])
EXPERIMENT_CLICKS = Counter(
    "recsys_experiment_clicks_total",
    "Clicks joined by request_id to an exposure of the arm (same user, an item it showed), counted once "
    "across replicas.", ["experiment", "arm"])
EXPERIMENT_CONVERSIONS = Counter(
    "recsys_experiment_conversions_total",
    "Purchases joined by request_id to an exposure of the arm (same user, an item it showed), counted once "
    "across replicas.", ["experiment", "arm"])
EXPERIMENT_OUTCOMES_DROPPED = Counter(
    "recsys_experiment_outcomes_dropped_total",
    "What the online join of experiment outcomes could not use, by reason: unmatched (a click or purchase "
    "naming a request_id whose exposure did not arrive within 30 s), mismatched (another user's exposure, or "
    "an item it did not show), evicted (an exposure pushed out of the join by its capacity before its TTL).",
    ["reason"])
# Online click-through of served lists per model version (the response's model_version), from the same
# join as the per-arm counts (recsys/experiments/outcomes.py), once across replicas; shadow and forced
# exposures left out. RecsysPromotedModelCtrDrop compares a new champion's ratio with its predecessor's.
MODEL_STREAM_IMPRESSIONS = Counter(
    "recsys_model_stream_impressions_total",
    "Items shown per model version, counted from the exposures on the event stream once across replicas "
    "(shadow and forced ones left out): the denominator of the online CTR by version.", ["version"])
MODEL_CLICKS = Counter(
    "recsys_model_clicks_total",
    "Clicks joined by request_id to an exposure of the model version (same user, an item it showed), counted "
    "once across replicas.", ["version"])
MODEL_CONVERSIONS = Counter(
    "recsys_model_conversions_total",
    "Purchases joined by request_id to an exposure of the model version (same user, an item it showed), "
    "counted once across replicas.", ["version"])
EXPERIMENT_CACHE_HITS = Counter(
    "recsys_experiment_cache_hits_total", "Recommend answers served from the per-user cache, per experiment arm.",
    ["experiment", "arm"])
SHADOW_REQUESTS = Counter(
    "recsys_shadow_requests_total",
    "Background answers by shadow versions, by outcome: ok, error, skipped (shadow_max_in_flight reached).",
    ["shadow", "outcome"])
SHADOW_LATENCY = Histogram(
    "recsys_shadow_request_duration_seconds", "Latency of shadow answers (never returned).", ["shadow"],
    buckets=LATENCY_BUCKETS)
EXPERIMENT_ARM = Gauge(
    "recsys_experiment_arm",
    "Arms of the running experiments in the loaded file: the arm's target share; control=\"true\" marks the "
    "control (the guardrail and sample-ratio alerts compare against these).", ["experiment", "arm", "control"])
EXPERIMENT_SRM_CRITICAL = Gauge(
    "recsys_experiment_srm_critical",
    "The chi-square statistic above which an experiment's arm split has p < 0.001 (arms - 1 degrees of freedom).",
    ["experiment"])
EXPERIMENT_CONFIG_LOADS = Counter(
    "recsys_experiments_config_loads_total",
    "Loads of the experiments file: ok, or invalid (the previous file keeps serving).", ["result"])
CACHE_REQUESTS = Counter(
    "recsys_cache_requests_total",
    "Per-user list cache lookups, by result: hit, miss, expired (TTL) or invalidated (new interactions).",
    ["result"])
CACHE_INVALIDATIONS = Counter(
    "recsys_cache_invalidations_total", "Cached lists dropped because the user interacted N times since.")
# Transport security and caller authorization (recsys/rpc/tls.py, recsys/rpc/auth.py).
AUTH_DENIED = Counter(
    "recsys_auth_denied_total",
    "Calls refused by caller authentication or authorization, by reason (unauthenticated, method, privilege, "
    "rate_limited, peer) and caller name (empty when the caller is unknown).", ["reason", "caller"])
SECURITY_RELOADS = Counter(
    "recsys_security_reloads_total",
    "Re-reads of changed security files (server_tls, client_tls, callers): ok, or rejected (the previous ones "
    "stay in use).", ["what", "result"])
TLS_CERT_EXPIRY = Gauge(
    "recsys_tls_certificate_expiry_timestamp_seconds",
    "When the certificate in use expires (notAfter, unix time), by service and side (server, client); set at every "
    "(re)load of the certificate files.", ["service", "side"])


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
    """Serve /metrics on `port` (0 disables) at the service's own bind address (setting `host`, so
    `--host 127.0.0.1` keeps metrics on loopback too). Process metrics come from the default registry."""
    if port:
        start_http_server(port, addr=host.strip("[]") or "0.0.0.0", registry=REGISTRY)
