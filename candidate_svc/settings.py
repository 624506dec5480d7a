"""candidate_svc settings (flags, RECSYS_* environment variables, or the `candidate_svc:` config section).
Every field is defined in recsys/settings.py."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.settings import setting


@dataclass
class CandidateSettings:
    host: str = setting("host")
    port: int = setting("port", 50052)
    metrics_port: int = setting("metrics_port", 9102)
    log_format: str = setting("log_format")
    event_loop: str = setting("event_loop")
    registry: str = setting("registry")
    reload_interval_s: float = setting("reload_interval_s")
    bundle: list[str] = setting("bundle")
    default_version: str = setting("default_version")
    index: str = setting("index")
    n_candidates: int = setting("n_candidates")
    max_n: int = setting("max_n")
    history_window: int = setting("history_window")
    max_request_history: int = setting("max_request_history")
    max_exclude: int = setting("max_exclude")
    max_message_bytes: int = setting("max_message_bytes")
    max_in_flight: int = setting("max_in_flight")
    drain_delay_s: float = setting("drain_delay_s")
    drain_grace_s: float = setting("drain_grace_s")
    max_id_len: int = setting("max_id_len")
    max_map_entries: int = setting("max_map_entries")
    max_map_key_len: int = setting("max_map_key_len")
    max_map_value_len: int = setting("max_map_value_len")
    stream: str = setting("stream")
    consumer_batch: int = setting("consumer_batch")
    consumer_interval_s: float = setting("consumer_interval_s")
    plaintext: bool = setting("plaintext")
    tls_cert: str = setting("tls_cert")
    tls_key: str = setting("tls_key")
    tls_ca: str = setting("tls_ca")
    tls_client_auth: str = setting("tls_client_auth")
    health_port: int = setting("health_port")
    tls_peers: list[str] = setting("tls_peers")
