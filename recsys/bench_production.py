"""The bench's production configuration beside the plain one (issue 13 point 1): a second cluster on the
same bundle with mutual TLS on every hop and caller authorization (recsys/bench_security.py), tracing
sampled at 5% with OTLP export to a collector process (recsys/bench_tracing.py), the exposure log and
the per-user cache on (the services' defaults). Its cache's miss path (a user's first call) and hit path
(the same user again) are reported apart, in blocks interleaved with the plain cluster's calls (cache
and exposures off), so machine drift lands on all three."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from recsys.bench_floor import set_candidates
from recsys.bench_memory import rss_mb
from recsys.bench_security import mtls_setup
from recsys.bench_tracing import SinkProcess
from recsys.cluster import Cluster, start_cluster
from recsys.latency import RecommendClient, summarize

SAMPLE_RATIO = 0.05  # the manifests' default when tracing is on


def production_paths(plain: Cluster, bundle: Path, users: Sequence[str], workdir: Path, console: Console,
                     n_candidates: int = 300, requests: int = 200, block: int = 25, index: str = "exact") -> dict:
    """p50/p90/p99/max of the plain cluster, and of the production one's misses and hits, over `requests`
    distinct users each (the first `requests` of `users`)."""
    users = list(dict.fromkeys(users))[:requests + 20]
    if len(users) < 21:
        raise ValueError("production_paths needs at least 21 distinct users")
    warm, users = users[:20], users[20:]
    certs, credentials, extra = mtls_setup(workdir)
    set_candidates(plain, n_candidates)
    extra["ranker_svc"] += ["--n-candidates", str(n_candidates)]
    with SinkProcess() as sink:
        env = sink.env("parentbased_traceidratio", "production") | {"OTEL_TRACES_SAMPLER_ARG": str(SAMPLE_RATIO)}
        t0 = time.monotonic()
        console.print("production configuration: starting a cluster with mTLS, tracing, exposures, cache")
        with start_cluster(bundle, port=0, tls=certs, extra=extra, env=env, index=index) as prod:
            start_s = time.monotonic() - t0
            plain_client = RecommendClient(plain.target)
            prod_client = RecommendClient(prod.target, credentials=credentials)
            try:
                plain_client.block(warm)
                prod_client.block(warm)
                lat: dict[str, list[float]] = defaultdict(list)
                errors: dict[str, int] = defaultdict(int)
                cached: dict[str, list[bool]] = defaultdict(list)
                for b, start in enumerate(range(0, len(users), block)):
                    chunk = users[start:start + block]
                    order = ["miss", "plain", "hit"] if b % 2 == 0 else ["plain", "miss", "hit"]
                    for arm in order:
                        got, failed, hits = (plain_client if arm == "plain" else prod_client).block(chunk)
                        lat[arm] += got
                        errors[arm] += failed
                        cached[arm] += hits
            finally:
                plain_client.close()
                prod_client.close()
            memory = {name: rss_mb(s.proc.pid) for name, s in prod.services.items()}
        spans = sink.counts()
    out: dict = {name: summarize(lat[name]) | {"errors": errors[name],
                                               "cached_share": sum(cached[name]) / max(1, len(cached[name]))}
                 for name in ("plain", "miss", "hit")}
    out |= {"n_candidates": n_candidates, "start_s": start_s, "rss_mb": memory, "spans_exported": spans,
            "setup": f"mTLS + caller authorization, tracing parentbased_traceidratio {SAMPLE_RATIO} (OTLP to a "
                     f"collector process), exposure log on, cache memory:// on; plain: cache and exposures off; "
                     f"{len(users)} distinct users, blocks of {block} interleaved"}
    return out
