"""The bench's experiments figures: the cost of assignment per request, and the single-client latency
cost of a 10% shadow share (the same requests with the shadow on and off, interleaved in one cluster
that holds the bench bundle and a twin of it as the shadow's version)."""

from __future__ import annotations

import os
import random
import shutil
import time
import timeit
from pathlib import Path

from rich.console import Console

from recsys.bundle import read_metadata, write_metadata
from recsys.cluster import start_cluster
from recsys.experiments.config import parse_config
from recsys.experiments.router import RequestFacts, route
from recsys.latency import sequential, summarize
from recsys.scrape import scrape

# A holdout and two layers: what a busy file routes every request through.
_ROUTING = """\
holdout: {salt: holdout, share: 0.05}
layers:
  - name: models
    salt: layer-models
    experiments:
      - name: ranker
        salt: exp-ranker
        status: running
        buckets: [0, 10000]
        coverage: 0.5
        arms:
          - {name: control, weight: 1, control: true, model_version: a}
          - {name: challenger, weight: 1, model_version: b}
  - name: ui
    salt: layer-ui
    experiments:
      - name: diversity
        salt: exp-diversity
        status: running
        buckets: [0, 5000]
        coverage: 1
        targeting: {surface: [home]}
        arms:
          - {name: control, weight: 1, control: true, model_version: a}
          - {name: diverse, weight: 1, model_version: a, diversity_lambda: 0.6}
"""
_OFF, _SHADOW = "layers: []\n", "shadow:\n  - {{name: bench-shadow, model_version: {v}, share: 0.1}}\nlayers: []\n"


def assignment_cost_us(n: int = 20_000) -> float:
    """Mean time of route() per request (µs), over distinct users."""
    config = parse_config(_ROUTING)
    facts = [RequestFacts(f"u{i}", surface="home") for i in range(n)]
    it = iter(facts)
    return timeit.timeit(lambda: route(config, next(it)), number=n) / n * 1e6


def twin_bundle(bundle: Path) -> Path:
    """The bundle under a second version id (hard links; a fresh metadata file): a shadow's version that
    does exactly the champion's work. Kept beside the bundle between runs."""
    meta = read_metadata(bundle)
    twin = bundle.parent / f"{bundle.name}-twin"
    try:
        if read_metadata(twin).version == f"{meta.version}-twin":
            return twin
    except Exception:
        shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(bundle, twin, copy_function=os.link)
    (twin / "metadata.json").unlink()  # a hard link: writing through it would change the original
    meta.version = f"{meta.version}-twin"
    write_metadata(twin, meta)
    return twin


def _loads(port: int) -> float:
    return scrape(port).get(("recsys_experiments_config_loads_total", (("result", "ok"),)), 0.0)


def _switch(path: Path, text: str, port: int, timeout_s: float = 20.0) -> None:
    """Write the file and wait until the ranker has loaded it."""
    before = _loads(port)
    path.write_text(text)
    deadline = time.monotonic() + timeout_s
    while _loads(port) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ranker did not load {path} within {timeout_s:.0f} s")
        time.sleep(0.1)


def shadow_cost(bundle: Path, users: list[str], rng: random.Random, workdir: Path, console: Console,
                requests: int = 400, rounds: int = 3) -> dict:
    twin = twin_bundle(bundle)
    path = workdir / "bench-experiments.yaml"
    path.write_text(_OFF)
    with console.status("shadow cost: starting a cluster with two versions"), \
            start_cluster([bundle, twin], port=0, extra={"ranker_svc": [
                "--experiments", str(path), "--experiments-reload-s", "0.2"]}) as cluster:
        port = cluster.services["ranker_svc"].metrics_port
        sequential(cluster.target, [rng.choice(users) for _ in range(50)])  # warm-up
        lat: dict[str, list[float]] = {"off": [], "shadow 10%": []}
        for r in range(rounds):
            for name, text in (("off", _OFF), ("shadow 10%", _SHADOW.format(v=read_metadata(twin).version))):
                console.status(f"shadow cost: round {r + 1}/{rounds}, {name}")
                _switch(path, text, port)
                got, errors = sequential(cluster.target, [rng.choice(users) for _ in range(requests)])
                lat[name] += got
        shadows = {dict(labels).get("outcome"): v for (metric, labels), v in scrape(port).items()
                   if metric == "recsys_shadow_requests_total"}
    out = {name: summarize(v) for name, v in lat.items()}
    out["p50_cost_ms"] = out["shadow 10%"]["p50_ms"] - out["off"]["p50_ms"]
    out["p99_cost_ms"] = out["shadow 10%"]["p99_ms"] - out["off"]["p99_ms"]
    out["shadow_requests"] = shadows
    return out
