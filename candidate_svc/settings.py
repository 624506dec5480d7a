"""candidate_svc settings (flags, RECSYS_* environment variables, or the `candidate_svc:` config section)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CandidateSettings:
    host: str = field(default="0.0.0.0", metadata={"help": "address to bind"})
    port: int = field(default=50052, metadata={"help": "gRPC port"})
    metrics_port: int = field(default=9102, metadata={"help": "Prometheus /metrics port (0 = off)"})
    registry: str = field(default="", metadata={
        "help": "model registry directory: serve its champion and follow promotions (instead of --bundle)"})
    reload_interval_s: float = field(default=30.0, metadata={"help": "how often to check the registry"})
    bundle: str = field(default="", metadata={"help": "model bundle directory (required)"})
    index: str = field(default="exact", metadata={"help": "FAISS index: exact, hnsw or ivf"})
    default_n: int = field(default=300, metadata={"help": "candidates when the request asks for 0"})
    max_n: int = field(default=5000, metadata={"help": "largest n a request may ask for"})
    max_history: int = field(default=5000, metadata={"help": "longest history accepted in a request"})
    max_exclude: int = field(default=200_000, metadata={
        "help": "most excluded ids per request (the ranker excludes a user's whole history)"})
