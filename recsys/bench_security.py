"""The bench's transport-security figure: single-client Recommend latency with TLS off, and with mutual TLS
on every hop (client → ranker → feature_svc and candidate_svc) plus caller authorization (the client
named by its certificate in a callers file, the dependencies accepting only the ranker's certificate),
with the ranker's cache off in both so that every call crosses all three hops.

The same bundle is served by two clusters side by side, one per variant, and the rounds are interleaved
(their order alternating) so a drift in the machine's load falls on both alike, as shadow_cost does.
Certificates come from a throwaway local CA (recsys/rpc/devcerts.py)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import grpc
import yaml
from rich.console import Console

from recsys.cluster import SERVICES, start_cluster, tls_credentials
from recsys.latency import sequential, summarize
from recsys.rpc.devcerts import LocalCA
from recsys.rpc.tls import TLSFiles

CLIENT = "bench-client"


def mtls_setup(workdir: Path, ranker_flags: list[str] | None = None
               ) -> tuple[dict[str, TLSFiles], grpc.ChannelCredentials, dict[str, list[str]]]:
    """A throwaway CA under `workdir`: each service's certificate, the bench client's credentials, and the
    services' flags (the dependencies accept only the ranker; the ranker's callers file names the client)."""
    pki = Path(workdir) / "bench-pki"
    shutil.rmtree(pki, ignore_errors=True)
    ca = LocalCA(pki)
    certs = {name: ca.issue(name.removesuffix("_svc")) for name in SERVICES}
    credentials = tls_credentials(ca.issue(CLIENT))
    callers = pki / "callers.yaml"
    callers.write_text(yaml.safe_dump({"callers": [{"name": "bench", "identity": CLIENT, "methods": ["Recommend"]}]}))
    peers = ["--tls-peers", "ranker"]
    return certs, credentials, {"feature_svc": peers, "candidate_svc": peers,
                                "ranker_svc": [*(ranker_flags or []), "--callers", str(callers)]}


def tls_cost(bundle: Path, users: list[str], rng: random.Random, workdir: Path, console: Console,
             requests: int = 400, rounds: int = 4) -> dict:
    no_cache = ["--cache", "none"]  # every call makes all three hops: TLS's whole cost, not a cache hit's
    certs, credentials, extra = mtls_setup(workdir, no_cache)
    with console.status("TLS cost: starting a plaintext and a mutual-TLS cluster"), \
            start_cluster(bundle, port=0, extra={"ranker_svc": no_cache}) as plain, \
            start_cluster(bundle, port=0, tls=certs, extra=extra) as secure:
        variants = {"plaintext": (plain.target, None), "mtls+auth": (secure.target, credentials)}
        for target, creds in variants.values():
            sequential(target, [rng.choice(users) for _ in range(50)], credentials=creds)  # warm-up
        lat: dict[str, list[float]] = {name: [] for name in variants}
        errors = dict.fromkeys(variants, 0)
        for r in range(rounds):
            for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
                console.status(f"TLS cost: round {r + 1}/{rounds}, {name}")
                target, creds = variants[name]
                got, failed = sequential(target, [rng.choice(users) for _ in range(requests)], credentials=creds)
                lat[name] += got
                errors[name] += failed
    out: dict = {name: summarize(v) for name, v in lat.items()}
    out["p50_cost_ms"] = out["mtls+auth"]["p50_ms"] - out["plaintext"]["p50_ms"]
    out["p99_cost_ms"] = out["mtls+auth"]["p99_ms"] - out["plaintext"]["p99_ms"]
    out["errors"] = errors
    return out
