"""feature_svc settings (flags, RECSYS_* environment variables, or the `feature_svc:` config section)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FeatureSettings:
    host: str = field(default="0.0.0.0", metadata={"help": "address to bind"})
    port: int = field(default=50053, metadata={"help": "gRPC port"})
    metrics_port: int = field(default=9103, metadata={"help": "Prometheus /metrics port (0 = off)"})
    registry: str = field(default="", metadata={
        "help": "model registry directory: serve its champion and follow promotions (instead of --bundle)"})
    reload_interval_s: float = field(default=30.0, metadata={"help": "how often to check the registry"})
    bundle: str = field(default="", metadata={"help": "model bundle whose feature tables to load"})
    storage: str = field(default="embedded://", metadata={"help": "embedded:// or redis://host:port/db"})
    load_bundle: bool = field(default=True, metadata={
        "help": "load the bundle's tables into the store at start (turn off for a Redis store filled by "
                "`recsys features load`)"})
    max_batch: int = field(default=10_000, metadata={"help": "largest id batch accepted in one call"})
