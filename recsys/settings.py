"""Every service setting, defined once: its name, default, allowed range, meaning and the services that
read it. The services' settings dataclasses take their fields from here (`setting(name)`), the range
checks use it, and tests/unit/test_settings_catalog.py checks the README's configuration table against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

N_CANDIDATES = 300      # candidates retrieved per request
HISTORY_WINDOW = 500    # most recent history items that drive retrieval and features
AFFINITY_WINDOW = 20    # most recent history items whose categories and embeddings feed affinity features
DIVERSITY_LAMBDA = 0.8  # MMR λ (1 = no diversification)
MMR_POOL = 100          # top candidates MMR re-ranks
FRESH_SHARE = 0.1       # share of a list reserved for items added at run time, when there are candidates
RERANKERS = ("mmr", "calibrated", "category_caps", "longtail")  # recsys/pipeline/rerank.py
RERANKER = "mmr"        # the default re-ranker (the others: recsys/ranking/{calibrated,category_caps,exposure}.py)
CALIBRATION_LAMBDA = 0.5  # calibrated: weight of KL miscalibration against relevance
CATEGORY_CAP = 3        # category_caps: most items of one category in a list
LONGTAIL_BETA = 0.2     # longtail: share of the score given to unpopularity

ALL = ("feature_svc", "candidate_svc", "ranker_svc")
F, C, R = ("feature_svc",), ("candidate_svc",), ("ranker_svc",)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    services: tuple[str, ...]
    range: tuple[float, float] | None = None    # inclusive
    factory: Any = None                         # for list defaults


_DEFS = [
    Setting("host", "0.0.0.0", "address to bind (gRPC and metrics)", ALL),
    Setting("port", 0, "gRPC port (ranker 50051, candidate 50052, feature 50053)", ALL, (0, 65535)),
    Setting("metrics_port", 0, "Prometheus /metrics port, 0 = off (ranker 9101, candidate 9102, feature 9103)",
            ALL, (0, 65535)),
    Setting("log_format", "text", "log lines: text, or json (one object per line with request_id and trace_id; "
            "the Kubernetes manifests set json)", ALL),
    Setting("event_loop", "asyncio", "the serving event loop: asyncio (the standard library's) or uvloop (libuv: "
            "a faster loop; through the whole ranker it measured alike, docs/feedback-loop.md)", ALL),
    Setting("bundle", None, "model bundle directory; repeat to hold several versions (the first is the default)",
            ALL, factory=list),
    Setting("registry", "", "model registry directory: hold its champion and live versions, follow changes "
            "(instead of --bundle)", ALL),
    Setting("reload_interval_s", 30.0, "how often to check the registry", ALL, (0.05, 86_400)),
    Setting("default_version", "", "version served when a request names none (default: the first bundle or "
            "the champion)", ALL),
    Setting("storage", "embedded://", "feature storage URL: embedded:// or redis://host:port/db", F),
    Setting("load_bundle", True, "load the bundle's tables into the store at start (off: a Redis store filled "
            "by `recsys features load`)", F),
    Setting("max_batch", 10_000, "largest id batch accepted in one call", F, (1, 10_000_000)),
    # Bounded work per call and overload (docs/operations.md, "Limits"; recsys/rpc/admission.py, limits.py).
    Setting("max_message_bytes", 4 * 1024 * 1024, "largest request body accepted (RESOURCE_EXHAUSTED beyond it; "
            "the transport refuses twice this outright) and largest answer built", ALL, (1024, 1 << 30)),
    Setting("max_in_flight", 64, "calls handled at once; beyond it a call is refused at once with "
            "RESOURCE_EXHAUSTED instead of queued (0 = unbounded; health checks always answer)", ALL,
            (0, 1_000_000)),
    Setting("drain_delay_s", 1.0, "after SIGTERM, seconds the server keeps taking calls while it reports "
            "NOT_SERVING, so clients watching its health (and load balancers) move away first", ALL, (0.0, 300.0)),
    Setting("drain_grace_s", 10.0, "after that, seconds the calls in flight get to finish before they are "
            "cancelled (keep delay + grace below the pod's terminationGracePeriodSeconds)", ALL, (0.0, 3600.0)),
    Setting("max_id_len", 512, "longest id in a request (user, item, model version; Send: user and item ids)",
            ALL, (1, 1_000_000)),
    Setting("max_map_entries", 100, "most entries in a request's map (user_attributes, context.extra, force_arms, "
            "source_quotas, an event's attributes); a Recommend or Retrieve over any size setting is refused as it "
            "is parsed (INVALID_ARGUMENT, `recsys_grpc_server_rejected_total{reason=\"too_big_field\"}`)", C + R,
            (0, 1_000_000)),
    Setting("max_map_key_len", 100, "longest key of such a map entry", C + R, (1, 1_000_000)),
    Setting("max_map_value_len", 1000, "longest value of such a map entry (and context.surface, context.device)",
            C + R, (1, 10_000_000)),
    Setting("max_request_exclude", 10_000, "most exclude_item_ids in one Recommend", R, (0, 10_000_000)),
    Setting("max_event_id_len", 256, "longest event_id in Feedback/Send", R, (1, 1_000_000)),
    Setting("max_title_len", 1000, "longest item title in an item upsert", R, (0, 10_000_000)),
    Setting("max_categories", 100, "most categories of an item upsert", R, (0, 1_000_000)),
    Setting("max_category_len", 200, "longest category name of an item upsert", R, (1, 1_000_000)),
    Setting("index", "exact", "ANN index: exact, hnsw or ivf (FAISS), or pruned (exact; reads only the items "
            "long enough to enter the top n)", C),
    Setting("n_candidates", N_CANDIDATES, "candidates retrieved per request (candidate_svc: when the request "
            "asks for 0)", C + R, (1, 100_000)),
    Setting("max_n", 5000, "largest number of candidates a request may ask for", C, (1, 1_000_000)),
    Setting("max_request_history", 5000, "longest history accepted in a Retrieve request", C, (1, 10_000_000)),
    Setting("max_exclude", 200_000, "most excluded ids per Retrieve request (the ranker excludes a user's whole "
            "history)", C, (0, 100_000_000)),
    Setting("history_window", HISTORY_WINDOW, "most recent history items that drive retrieval and features "
            "(every seen item is still excluded)", C + R, (1, 10_000_000)),
    Setting("affinity_window", AFFINITY_WINDOW, "most recent history items whose categories and embeddings "
            "feed the affinity features", R, (1, 100_000)),
    Setting("feature_addr", "127.0.0.1:50053", "feature_svc gRPC target: host:port, dns:///name:port (calls spread "
            "over every resolved address) or ipv4:host:port,host:port", R),
    Setting("candidate_addr", "127.0.0.1:50052", "candidate_svc gRPC target: host:port, dns:///name:port (calls spread "
            "over every resolved address) or ipv4:host:port,host:port", R),
    Setting("dependency_timeout_ms", 1000, "deadline of each call to feature_svc/candidate_svc (capped by the "
            "caller's deadline)", R, (1, 600_000)),
    Setting("diversity_lambda", DIVERSITY_LAMBDA, "default MMR λ (1 = no diversification)", R, (0.0, 1.0)),
    Setting("mmr_pool", MMR_POOL, "top candidates considered by MMR", R, (1, 100_000)),
    Setting("reranker", RERANKER, "default re-ranker of the top mmr_pool candidates: mmr, calibrated (the list's "
            "category mix follows the user's history, Steck 2018), category_caps or longtail", R),
    Setting("bundle_reranker", True, "serve with the re-ranker a bundle's training chose on validation (its "
            "serving_defaults, recsys train); false: the reranker and diversity_lambda settings for every bundle; "
            "a request's or an arm's re-ranker wins either way", R),
    Setting("calibration_lambda", CALIBRATION_LAMBDA, "calibrated re-ranker: weight of miscalibration against "
            "relevance (0 = relevance order)", R, (0.0, 1.0)),
    Setting("category_cap", CATEGORY_CAP, "category_caps re-ranker: most items of one category in a list", R,
            (1, 10_000)),
    Setting("longtail_beta", LONGTAIL_BETA, "longtail re-ranker: share of the score given to less popular items "
            "(0 = relevance order)", R, (0.0, 1.0)),
    Setting("max_k", 200, "largest k a request may ask for", R, (1, 10_000)),
    Setting("fresh_share", FRESH_SHARE, "share of each list reserved for items added since training (item upserts; "
            "the ranker has no signal for them yet), filled only by retrieved ones", R, (0.0, 1.0)),
    Setting("stream", "file://recsys-data/events", "event stream URL: file://DIR (embedded durable log) or "
            "redis://host:port/db?key=recsys:events (Redis Streams)", ALL),
    Setting("stream_trim_interval_s", 600.0, "how often ranker_svc applies the stream's retention policy "
            "(docs/event-stream.md)", R, (1.0, 86_400 * 7)),
    Setting("consumer_batch", 500, "stream entries a consumer applies per step", F + C + R, (1, 100_000)),
    Setting("consumer_interval_s", 0.0, "least time between two reads of a serving process's stream consumer: "
            "fewer wake-ups of the process while events stream in (Recommend's tail), events visible that much "
            "later (docs/feedback-loop.md)", F + C, (0.0, 1.0)),
    Setting("max_history", 1000, "longest history an event can grow (oldest items dropped, counters kept)", F,
            (1, 10_000_000)),
    Setting("max_send_batch", 10_000, "most events in one Feedback/Send call", R, (1, 1_000_000)),
    Setting("exposures", True, "log every Recommend response on the stream as an exposure", R),
    Setting("exposure_queue", 10_000, "exposures buffered for the stream; beyond it they are dropped and "
            "counted", R, (1, 10_000_000)),
    Setting("cache", "memory://?max_entries=100000", "per-user list cache: memory://?max_entries=N, "
            "redis://host:port/db, or none", R),
    Setting("cache_ttl_s", 900.0, "a cached list expires after this many seconds", R, (0.001, 86_400 * 30)),
    Setting("cache_max_new", 10, "a cached list is recomputed after the user's N-th new interaction", R,
            (1, 1_000_000)),
    Setting("cache_depth", 25, "items computed and cached per list (a request for more computes more)", R,
            (1, 10_000)),
    Setting("experiments", "", "A/B experiments file (docs/experiments.md); empty = no experiments", R),
    Setting("shadow_max_in_flight", 4, "shadow answers computed at once; beyond it a shadow is skipped and "
            "counted", R, (0, 1000)),
    Setting("degraded_memory_users", 10_000, "users whose last good list the ranker keeps for degraded answers "
            "when a dependency is down (0 = popular items only)", R, (0, 10_000_000)),
    Setting("experiments_reload_s", 5.0, "how often the experiments file is checked for changes", R,
            (0.1, 3600)),
    # Transport security and caller authorization (docs/operations.md, "Security"; recsys/rpc/tls.py, auth.py).
    Setting("plaintext", False, "serve and call without TLS; only for local runs (`recsys up`, `make demo` and the "
            "tests set it); otherwise tls_cert, tls_key and tls_ca are required", ALL),
    Setting("tls_cert", "", "PEM certificate chain this service presents, as server and as client of its "
            "dependencies; re-read when it changes", ALL),
    Setting("tls_key", "", "PEM private key of tls_cert", ALL),
    Setting("tls_ca", "", "PEM CA bundle that callers' client certificates and the dependencies' server "
            "certificates must chain to", ALL),
    Setting("tls_client_auth", "require", "require: every caller presents a client certificate signed by tls_ca "
            "(mutual TLS); none: server TLS only, no client certificate is asked for (the ranker, when callers "
            "prove who they are by bearer token only)", ALL),
    Setting("tls_peers", None, "client certificate names (SAN or CN) allowed to call this service; empty = any "
            "certificate tls_ca signed", F + C, factory=list),
    Setting("tls_reload_s", 10.0, "how often the ranker checks its certificate files for its calls to the "
            "dependencies (servers re-check them at each new connection)", R, (0.05, 3600)),
    Setting("health_port", 0, "a plaintext port serving only grpc.health.v1, for probes that cannot speak TLS "
            "(kubelet's gRPC probes); 0 = off", ALL, (0, 65535)),
    Setting("callers", "", "callers file: who may call (bearer token digests, client certificate names), which "
            "methods, privileges and rate limits; empty = caller authentication off", R),
    Setting("callers_reload_s", 5.0, "how often the callers file is checked for changes", R, (0.05, 3600)),
]
CATALOG: dict[str, Setting] = {s.name: s for s in _DEFS}
RANGES = {s.name: s.range for s in _DEFS if s.range is not None}


def setting(name: str, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field for the catalog's setting `name` (a service may give its own default, e.g. a port)."""
    s = CATALOG[name]
    meta = {"help": s.help}
    if s.factory is not None and default is dataclasses.MISSING:
        return dataclasses.field(default_factory=s.factory, metadata=meta)
    return dataclasses.field(default=s.default if default is dataclasses.MISSING else default, metadata=meta)


def markdown_table() -> str:
    """The README's configuration table (tests/unit/test_settings_catalog.py keeps the two equal)."""
    rows = ["| setting | services | default | meaning |", "| --- | --- | --- | --- |"]
    for s in _DEFS:
        services = "all" if s.services == ALL else ", ".join(s.services)
        if s.name in ("port", "metrics_port"):
            default = "per service"
        elif s.factory is not None or s.default == "":
            default = "—"
        else:
            default = f"`{s.default}`"
        rows.append(f"| `{s.name}` | {services} | {default} | {s.help} |")
    return "\n".join(rows)
