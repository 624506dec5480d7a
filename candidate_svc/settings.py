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
    stream: str = setting("stream")
    consumer_batch: int = setting("consumer_batch")
