"""`make demo`: train on synthetic data, start the three services, show recommendations and latency."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from recsys.client import RecommenderClient, interaction, item_upsert
from recsys.cluster import start_cluster
from recsys.data.spec import load_dataset
from recsys.display import print_recommendations
from recsys.latency import sequential, summarize
from recsys.training.config import TrainConfig
from recsys.training.select import table as selection_table
from recsys.training.trainer import train

DEMO_SPEC = "synthetic:users=3000,items=5000,interactions=150000,seed=7"


def feedback_demo(client: RecommenderClient, user: str, ds, console: Console) -> None:
    """Click the top item, see it leave the list at once; add an item of the user's favourite category
    without retraining, see it recommended."""
    before = client.recommend(user, 10)
    clicked = before.items[0]
    sent = client.send([interaction(user, clicked.item_id, "click", request_id=before.request_id)])
    after = client.recommend(user, 10)
    console.print(f"user {user} clicked {clicked.item_id} ({escape(clicked.title)}): Send accepted {sent.accepted}; "
                  f"the next Recommend ({'cached' if after.cached else 'computed'}) no longer shows it: "
                  f"{clicked.item_id not in {it.item_id for it in after.items}}")
    history = ds.interactions[ds.interactions["user_id"] == user]["item_id"]
    cats = ds.items.set_index("item_id").loc[history, "categories"].explode().value_counts()
    favourite = str(cats.index[0])
    new_id = f"new-item-{int(time.time())}"
    client.send([item_upsert(new_id, f"Brand new in {favourite}", [favourite])])
    t0, found = time.time(), None
    while time.time() - t0 < 10 and found is None:
        resp = client.recommend(user, 50, explain=True)  # explain bypasses the cache: a fresh answer
        found = next((k for k, it in enumerate(resp.items) if it.item_id == new_id), None)
        if found is None:
            time.sleep(0.1)
    where = f"at position {found + 1} of 50 after {time.time() - t0:.1f}s" if found is not None else "not in the top 50"
    console.print(f"item upsert {new_id} (category {favourite}, never trained on): {where}")


def run_demo(workdir: Path, console: Console) -> int:
    t0 = time.time()
    console.rule("1. train on synthetic data")
    ds = load_dataset(DEMO_SPEC)
    console.print(f"{DEMO_SPEC}: {len(ds.interactions):,} interactions")
    bundle = workdir / "demo"
    # the hyperparameter searches on their small grids: a demo shows them without waiting for the full ones
    meta = train(ds, bundle, TrainConfig(select_grid="small"), dataset_spec=DEMO_SPEC)
    m = meta.metrics
    console.print(f"bundle {meta.version}: validation nDCG@10 {m['valid_ndcg@10']:.3f} "
                  f"(no diversity {m['valid_no_diversity_ndcg@10']:.3f}, most-popular baseline "
                  f"{m['valid_popularity_ndcg@10']:.3f}), candidate recall@300 "
                  f"{m['valid_candidate_recall@300']:.3f}; trained in {time.time() - t0:.0f}s")
    console.print(selection_table(meta.params["selection"]))

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

        console.rule("4. the feedback loop: a click and a new item, through Feedback/Send")
        with RecommenderClient(cluster.target) as client:
            feedback_demo(client, str(heavy), ds, console)

        console.rule("5. latency of 200 Recommend calls (one client, sequential)")
        rng = random.Random(0)
        users = [str(u) for u in rng.choices(list(counts.index), k=200)]
        lat, errors = sequential(cluster.target, users)
        s = summarize(lat)
        console.print(f"p50 {s['p50_ms']:.1f} ms · p99 {s['p99_ms']:.1f} ms · mean {s['mean_ms']:.1f} ms · "
                      f"errors {errors}")
    console.print(f"services stopped; demo took {time.time() - t0:.0f}s")
    return 0 if errors == 0 and np.isfinite(s["p50_ms"]) else 1
