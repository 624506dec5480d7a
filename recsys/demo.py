"""`make demo`: train on synthetic data, start the three services, show recommendations and latency."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from recsys.client import RecommenderClient
from recsys.cluster import start_cluster
from recsys.data.spec import load_dataset
from recsys.display import print_recommendations
from recsys.latency import sequential, summarize
from recsys.training.config import TrainConfig
from recsys.training.trainer import train

DEMO_SPEC = "synthetic:users=3000,items=5000,interactions=150000,seed=7"


def run_demo(workdir: Path, console: Console) -> int:
    t0 = time.time()
    console.rule("1. train on synthetic data")
    ds = load_dataset(DEMO_SPEC)
    console.print(f"{DEMO_SPEC}: {len(ds.interactions):,} interactions")
    bundle = workdir / "demo"
    meta = train(ds, bundle, TrainConfig(), dataset_spec=DEMO_SPEC)
    m = meta.metrics
    console.print(f"bundle {meta.version}: validation nDCG@10 {m['valid_ndcg@10']:.3f} "
                  f"(no diversity {m['valid_no_diversity_ndcg@10']:.3f}, most-popular baseline "
                  f"{m['valid_popularity_ndcg@10']:.3f}), candidate recall@300 "
                  f"{m['valid_candidate_recall@300']:.3f}; trained in {time.time() - t0:.0f}s")

    console.rule("2. start feature_svc, candidate_svc, ranker_svc")
    with start_cluster(bundle, port=0) as cluster:
        for svc in cluster.services.values():
            console.print(f"{svc.name:14s} pid {svc.proc.pid:<7d} {svc.address}")
        counts = ds.interactions["user_id"].value_counts()
        heavy, light = counts.index[0], counts.index[len(counts) // 2]
        attrs = {}
        if ds.users is not None:
            row = ds.users.iloc[0]
            attrs = {c: str(row[c]) for c in ds.users.columns if c != "user_id"}

        console.rule("3. recommendations")
        with RecommenderClient(cluster.target) as client:
            for user, note, extra in ((heavy, f"{counts.iloc[0]} interactions", {}),
                                      (light, f"{counts.iloc[len(counts) // 2]} interactions", {"explain": True}),
                                      ("new-user-0001", f"never seen, attributes {attrs}", {"user_attributes": attrs})):
                resp = client.recommend(str(user), 10, **extra)
                print_recommendations(resp, f"user {user} ({note})")

        console.rule("4. latency of 200 Recommend calls (one client, sequential)")
        rng = random.Random(0)
        users = [str(u) for u in rng.choices(list(counts.index), k=200)]
        lat, errors = sequential(cluster.target, users)
        s = summarize(lat)
        console.print(f"p50 {s['p50_ms']:.1f} ms · p99 {s['p99_ms']:.1f} ms · mean {s['mean_ms']:.1f} ms · "
                      f"errors {errors}")
    console.print(f"services stopped; demo took {time.time() - t0:.0f}s")
    return 0 if errors == 0 and np.isfinite(s["p50_ms"]) else 1
