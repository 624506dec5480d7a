"""ranker_svc settings (flags, RECSYS_* environment variables, or the `ranker_svc:` config section)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RankerSettings:
    host: str = field(default="0.0.0.0", metadata={"help": "address to bind"})
    port: int = field(default=50051, metadata={"help": "gRPC port of the public Recommend API"})
    metrics_port: int = field(default=9101, metadata={"help": "Prometheus /metrics port (0 = off)"})
    bundle: list[str] = field(default_factory=list, metadata={
        "help": "model bundle directory; repeat to hold several versions (the first is the default)"})
    registry: str = field(default="", metadata={
        "help": "model registry directory: serve its champion and follow promotions (instead of --bundle)"})
    reload_interval_s: float = field(default=30.0, metadata={"help": "how often to check the registry"})
    default_version: str = field(default="", metadata={"help": "version served when a request pins none"})
    feature_addr: str = field(default="127.0.0.1:50053", metadata={"help": "feature_svc host:port"})
    candidate_addr: str = field(default="127.0.0.1:50052", metadata={"help": "candidate_svc host:port"})
    dependency_timeout_ms: int = field(default=1000, metadata={
        "help": "deadline of each call to feature_svc/candidate_svc (capped by the caller's deadline)"})
    n_candidates: int = field(default=300, metadata={"help": "candidates retrieved per request"})
    max_history: int = field(default=500, metadata={
        "help": "most recent history items that drive retrieval and features (all seen items stay excluded)"})
    diversity_lambda: float = field(default=0.8, metadata={"help": "default MMR λ (1 = no diversification)"})
    mmr_pool: int = field(default=100, metadata={"help": "top candidates considered by MMR"})
    max_k: int = field(default=200, metadata={"help": "largest k a request may ask for"})
