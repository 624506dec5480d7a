"""`recsys eval`: split a dataset by a protocol, train on the training part, and measure the serving
pipeline (through OfflineStack, i.e. the services' own code) and baselines on the test part."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from recsys.data.schema import Dataset
from recsys.data.split import stratified_split, temporal_split
from recsys.evaluation.metrics import map_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recsys.evaluation.offline import OfflineStack
from recsys.training.config import TrainConfig
from recsys.training.trainer import train


def split(ds: Dataset, protocol: str, seed: int) -> tuple[Dataset, pd.DataFrame]:
    """(training dataset, test interactions) under a protocol.

    msr: Microsoft Recommenders' stratified random 75/25 split per user (python_stratified_split,
    whose default stratifies by user); temporal: each user's last 20% of interactions by time.
    """
    if protocol == "msr":
        tr, te = stratified_split(ds.interactions, ratio=0.75, by="user", seed=seed)
    elif protocol == "temporal":
        tr, te = temporal_split(ds.interactions, test_fraction=0.2)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return Dataset(tr.reset_index(drop=True), ds.items, ds.users, f"{ds.name}:{protocol}-train"), te


def accuracy(recs: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> dict[str, float]:
    users = list(truth)
    return {
        f"precision@{k}": float(np.mean([precision_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"recall@{k}": float(np.mean([recall_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"ndcg@{k}": float(np.mean([ndcg_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"map@{k}": float(np.mean([map_at_k(recs.get(u, []), truth[u], k) for u in users])),
    }


def run_eval(args: argparse.Namespace, console: Console) -> int:
    from recsys.cli import _load

    ds = _load(args.dataset)
    train_ds, test = split(ds, args.protocol, args.seed)
    truth = {u: set(g) for u, g in test.groupby("user_id")["item_id"]}
    cfg = TrainConfig.from_file(Path(args.config)) if args.config else TrainConfig()
    results: dict[str, dict[str, float]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        train(train_ds, Path(tmp) / "bundle", cfg, dataset_spec=f"{args.dataset} ({args.protocol} train)")
        train_seconds = time.time() - t0
        stack = OfflineStack.from_bundle(Path(tmp) / "bundle")
        for name, lam in (("pipeline", None), ("pipeline_no_diversity", 1.0)):
            with Progress(transient=True) as progress:
                task = progress.add_task(name, total=len(truth))
                out = stack.recommend_many(list(truth), args.k, lam,
                                           progress=lambda p=progress, t=task: p.advance(t))
            results[name] = accuracy({u: [i.item_id for i in r.items] for u, r in out.items()}, truth, args.k)
    report = {"protocol": args.protocol, "k": args.k, "seed": args.seed, "dataset": args.dataset,
              "train_seconds": round(train_seconds, 1), "systems": results}
    table = Table(title=f"{args.dataset} · protocol {args.protocol} · k={args.k}")
    table.add_column("system")
    metrics = list(next(iter(results.values())))
    for m in metrics:
        table.add_column(m, justify="right")
    for name, r in results.items():
        table.add_row(name, *(f"{r[m]:.4f}" for m in metrics))
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        console.print(f"wrote {args.json}")
    return 0
