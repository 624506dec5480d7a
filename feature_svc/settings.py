"""feature_svc settings (flags, RECSYS_* environment variables, or the `feature_svc:` config section).
Every field is defined in recsys/settings.py."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.settings import setting


@dataclass
class FeatureSettings:
    host: str = setting("host")
    port: int = setting("port", 50053)
    metrics_port: int = setting("metrics_port", 9103)
    log_format: str = setting("log_format")
    event_loop: str = setting("event_loop")
    registry: str = setting("registry")
    reload_interval_s: float = setting("reload_interval_s")
    bundle: list[str] = setting("bundle")
    default_version: str = setting("default_version")
    storage: str = setting("storage")
    load_bundle: bool = setting("load_bundle")
    max_batch: int = setting("max_batch")
    max_history: int = setting("max_history")
    max_message_bytes: int = setting("max_message_bytes")
    max_in_flight: int = setting("max_in_flight")
    drain_delay_s: float = setting("drain_delay_s")
    drain_grace_s: float = setting("drain_grace_s")
    max_id_len: int = setting("max_id_len")
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
