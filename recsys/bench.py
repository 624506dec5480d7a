"""`make bench`: Recommend latency and throughput through the three services on loopback, per-stage
times scraped from the services' own Prometheus metrics, and process memory. Prints and writes JSON."""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys.bench_feedback import start_redis
from recsys.bench_memory import rss_mb
from recsys.bench_report import feedback_report
from recsys.bundle import BundleError, read_metadata
from recsys.cluster import Cluster, start_cluster
from recsys.data.spec import load_dataset
from recsys.latency import concurrent, sequential, summarize
from recsys.scrape import mean_by_label, scrape
from recsys.training.config import TrainConfig
from recsys.training.trainer import train


def ensure_bundle(args: argparse.Namespace, console: Console) -> tuple[Path, list[str]]:
    spec = f"synthetic:users={args.users},items={args.items},interactions={args.interactions},seed=11"
    bundle = Path(args.workdir) / f"bench-{args.items}"
    ds = None
    try:
        if read_metadata(bundle).dataset != spec:
            raise BundleError("different dataset")
        console.print(f"reusing bundle {bundle} ({spec})")
    except BundleError:
        console.print(f"training a bundle on {spec}")
        ds = load_dataset(spec)
        t0 = time.time()
        train(ds, bundle, TrainConfig(), dataset_spec=spec)
        console.print(f"trained in {time.time() - t0:.0f}s")
        # beside the bundle (not in it): how long building it took, reported by every run that reuses it
        build_record(args).write_text(json.dumps({"dataset": spec, "build_s": time.time() - t0}))
    users = [f"u{i}" for i in range(args.users)]
    if ds is not None:
        users = [str(u) for u in ds.interactions["user_id"].unique()]
    else:
        from recsys.feature_tables import FeatureTables
        users = FeatureTables.load(bundle / "features").user_ids.tolist()
    return bundle, users


def build_record(args: argparse.Namespace) -> Path:
    return Path(args.workdir) / f"bench-{args.items}.build.json"


def build_seconds(args: argparse.Namespace, dataset: str) -> float | None:
    """The recorded time to build the bench bundle of this dataset (None: built before it was recorded)."""
    try:
        rec = json.loads(build_record(args).read_text())
    except (OSError, ValueError):
        return None
    return rec.get("build_s") if rec.get("dataset") == dataset else None


def stage_report(cluster: Cluster) -> dict[str, float]:
    ranker = scrape(cluster.services["ranker_svc"].metrics_port)
    stages = mean_by_label(ranker, "recsys_stage_duration_seconds", "stage")
    for name in ("candidate_svc", "feature_svc"):
        rpc = mean_by_label(scrape(cluster.services[name].metrics_port), "grpc_server_handling_seconds",
                            "grpc_method")
        for method, ms in rpc.items():
            if method not in ("Check", "ServerReflectionInfo"):
                stages[f"{name}.{method} (server side)"] = ms
    return stages


def run_bench(args: argparse.Namespace, console: Console) -> int:
    bundle, users = ensure_bundle(args, console)
    rng = random.Random(0)
    # A fresh Redis per run: a stream left by an earlier run would be replayed by the consumers at start
    redis_dir = tempfile.mkdtemp(prefix="recsys-bench-redis-")
    redis = start_redis(redis_dir) if args.feedback else None
    stream = redis[1] + "?key=bench:events" if redis else None
    holder = {"proc": redis[0]} if redis else None  # the chaos run restarts Redis: its new process
    try:
        return _run(args, console, bundle, users, rng, stream, holder)
    finally:
        if holder:
            holder["proc"].kill()
            holder["proc"].wait()
        shutil.rmtree(redis_dir, ignore_errors=True)


def _run(args: argparse.Namespace, console: Console, bundle: Path, users: list[str], rng: random.Random,
         stream: str | None, redis: dict | None = None) -> int:
    feedback: dict = {}
    with start_cluster(bundle, port=0, index=args.index, stream=stream) as cluster:
        seq_users = [rng.choice(users) for _ in range(args.requests)]
        sequential(cluster.target, seq_users[:50])  # warm-up
        lat, seq_errors = sequential(cluster.target, seq_users)
        single = summarize(lat) | {"errors": seq_errors}
        single["throughput_rps"] = single["n"] / sum(lat) if lat else 0.0
        stages = stage_report(cluster)
        load = concurrent(cluster.target, [rng.choice(users) for _ in range(5000)],
                          concurrency=args.concurrency, duration=args.duration)
        if args.feedback:
            feedback = feedback_report(cluster, bundle, users, rng, stream or "file (embedded log)", console)
        memory = {name: rss_mb(s.proc.pid) for name, s in cluster.services.items()}
        overload: dict = {}
        if args.production:
            from recsys.bench_overload import overload_curve

            with console.status("overload: offered load up to 3x the saturating rate"):
                overload = overload_curve(cluster.target, users)
        chaos: list[dict] = []
        if args.chaos:
            from recsys.bench_chaos import chaos_report

            chaos = chaos_report(cluster, bundle, users, rng, stream, redis, console)
    experiments: dict = {}
    if args.experiments:
        from recsys.bench_experiments import assignment_cost_us, shadow_cost

        experiments = {"assignment_us": assignment_cost_us(),
                       "shadow": shadow_cost(bundle, users, rng, Path(args.workdir), console)}
    production: dict = {"overload": overload}
    if args.production:
        from recsys.bench_security import tls_cost
        from recsys.bench_tracing import tracing_cost

        production["tls"] = tls_cost(bundle, users, rng, Path(args.workdir), console)
        production["tracing"] = tracing_cost(bundle, users, rng, console)
    ann: dict = {}
    if args.ann_items:
        from recsys.bench_ann import ann_quality, learned_factors

        ann = ann_quality(args.ann_items, console=console)
        # the same figure on the vectors the services index: the bundle's learned item factors
        ann["learned"] = ann_quality(items=learned_factors(bundle), vectors=f"learned ({bundle.name})", console=console)
    scale: dict = {}
    if getattr(args, "scale", False):
        from recsys.bench_scale_report import print_scale
        from recsys.bench_sweep import scale_report

        scale = scale_report(args, bundle, users, console)
    meta = read_metadata(bundle)
    build_s = build_seconds(args, meta.dataset)
    result = {
        "bundle": meta.version, "dataset": meta.dataset, "index": args.index,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "single_client": single, "concurrent": load, "stage_mean_ms": stages, "rss_mb": memory,
        "feedback": feedback, "experiments": experiments, "chaos": chaos,
        "production": production, "ann": ann, "scale": scale, "bundle_build_s": build_s,
    }
    table = Table(title=f"Recommend through 3 services · {args.items:,} items · {args.index} index")
    for col in ("run", "n", "p50 ms", "p99 ms", "mean ms", "rps", "errors"):
        table.add_column(col, justify="right")
    for name, r in (("single client", single), (f"{load['concurrency']} in flight", load)):
        table.add_row(name, str(r["n"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}",
                      f"{r['throughput_rps']:.0f}", str(r["errors"]))
    console.print(table)
    st = Table(title="mean time per stage (single-client run)")
    st.add_column("stage")
    st.add_column("ms", justify="right")
    for k, v in stages.items():
        st.add_row(k, f"{v:.2f}")
    console.print(st)
    console.print("RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()))
    if overload:
        from recsys.bench_overload import overload_table

        ot = Table(title=f"overload (saturating {overload['saturating_rps']:.0f} rps)")
        for col in ("offered", "offered/s", "admitted/s", "shed/s", "failed", "p50 ms", "p99 ms", "shed p99 ms"):
            ot.add_column(col, justify="right")
        for row in overload_table(overload):
            ot.add_row(*row)
        console.print(ot)
    for name in ("tls", "tracing"):
        if name in production:
            console.print(f"{name}: " + json.dumps({k: v for k, v in production[name].items()
                                                    if "cost" in k or "noise" in k}),
                          highlight=False)
    if experiments:
        sh = experiments["shadow"]
        console.print(f"experiments: assignment {experiments['assignment_us']:.1f} µs per request (2 layers); "
                      f"a 10% shadow share: p50 {sh['off']['p50_ms']:.2f} → {sh['shadow 10%']['p50_ms']:.2f} ms, "
                      f"p99 {sh['off']['p99_ms']:.2f} → {sh['shadow 10%']['p99_ms']:.2f} ms "
                      f"({sh['p99_cost_ms']:+.2f} ms; shadows {sh['shadow_requests']})", highlight=False)
    if scale:
        print_scale(scale, console, args.items)
    console.print(f"bench bundle {bundle}: built in {build_s:.0f}s (cached between runs)" if build_s is not None
                  else f"bench bundle {bundle}: reused (its build time was not recorded)", highlight=False)
    if ann:
        from recsys.bench_ann import print_ann

        print_ann(ann, console)
        print_ann(ann["learned"], console)
    Path(args.json).write_text(json.dumps(result, indent=1))
    console.print(f"wrote {args.json}")
    return 0 if single["errors"] == 0 and load["errors"] == 0 else 1
