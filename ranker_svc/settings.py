"""ranker_svc settings (flags, RECSYS_* environment variables, or the `ranker_svc:` config section).
Every field is defined in recsys/settings.py."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.settings import setting


@dataclass
class RankerSettings:
    host: str = setting("host")
    port: int = setting("port", 50051)
    metrics_port: int = setting("metrics_port", 9101)
    log_format: str = setting("log_format")
    bundle: list[str] = setting("bundle")
    registry: str = setting("registry")
    reload_interval_s: float = setting("reload_interval_s")
    default_version: str = setting("default_version")
    feature_addr: str = setting("feature_addr")
    candidate_addr: str = setting("candidate_addr")
    dependency_timeout_ms: int = setting("dependency_timeout_ms")
    n_candidates: int = setting("n_candidates")
    history_window: int = setting("history_window")
    affinity_window: int = setting("affinity_window")
    diversity_lambda: float = setting("diversity_lambda")
    mmr_pool: int = setting("mmr_pool")
    fresh_share: float = setting("fresh_share")
    max_k: int = setting("max_k")
    stream: str = setting("stream")
    stream_trim_interval_s: float = setting("stream_trim_interval_s")
    consumer_batch: int = setting("consumer_batch")
    max_send_batch: int = setting("max_send_batch")
    max_message_bytes: int = setting("max_message_bytes")
    max_in_flight: int = setting("max_in_flight")
    max_id_len: int = setting("max_id_len")
    max_map_entries: int = setting("max_map_entries")
    max_map_key_len: int = setting("max_map_key_len")
    max_map_value_len: int = setting("max_map_value_len")
    max_request_exclude: int = setting("max_request_exclude")
    max_event_id_len: int = setting("max_event_id_len")
    max_title_len: int = setting("max_title_len")
    max_categories: int = setting("max_categories")
    max_category_len: int = setting("max_category_len")
    exposures: bool = setting("exposures")
    exposure_queue: int = setting("exposure_queue")
    cache: str = setting("cache")
    cache_ttl_s: float = setting("cache_ttl_s")
    cache_max_new: int = setting("cache_max_new")
    cache_depth: int = setting("cache_depth")
    experiments: str = setting("experiments")
    experiments_reload_s: float = setting("experiments_reload_s")
    shadow_max_in_flight: int = setting("shadow_max_in_flight")
    degraded_memory_users: int = setting("degraded_memory_users")
    plaintext: bool = setting("plaintext")
    tls_cert: str = setting("tls_cert")
    tls_key: str = setting("tls_key")
    tls_ca: str = setting("tls_ca")
    tls_client_auth: str = setting("tls_client_auth")
    health_port: int = setting("health_port")
    tls_reload_s: float = setting("tls_reload_s")
    callers: str = setting("callers")
    callers_reload_s: float = setting("callers_reload_s")
