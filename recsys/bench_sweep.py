"""The bench's catalog-scale section (issue 13 point 1), run by recsys/bench.py: per index kind, a plain
cluster (cache and exposure log off) and the in-process floor on the same bundle; the candidate sweep
interleaved with the floor (recsys/bench_floor.py); throughput at bounded concurrency and the highest
rate held with p99 ≤ 50 ms (recsys/bench_rate.py); each service's resident memory and start (bundle
load) time; then the Ray Serve peer in each of its configurations (recsys/bench_peer.py), interleaved
with the cluster and the floor again; and the production configuration's miss and hit paths beside the
plain one (recsys/bench_production.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from recsys.bench_floor import PLAIN_RANKER, Floor, set_candidates, sweep
from recsys.cluster import start_cluster
from recsys.latency import concurrent


def parse_counts(text: str) -> list[int]:
    """'25,100,300,500' → [25, 100, 300, 500]; a clear error for anything else."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"candidate counts must be integers separated by commas, got {text!r}"
                                         ) from None
    if not counts or any(not 1 <= c <= 5000 for c in counts):
        raise argparse.ArgumentTypeError(f"candidate counts must be 1..5000 (candidate_svc's max_n), got {text!r}")
    return counts


def _sweep(progress: Progress, label: str, cluster, floor, users, args, peer=None) -> list[dict]:
    task = progress.add_task(label, total=len(args.candidates) * args.sweep_requests)
    try:
        return sweep(cluster, floor, users, args.candidates, args.sweep_requests, args.sweep_block, peer=peer,
                     progress=lambda n: progress.advance(task, n))
    finally:
        progress.remove_task(task)


def scale_report(args: argparse.Namespace, bundle: Path, users: list[str], console: Console) -> dict:
    from recsys.bench_memory import rss_mb

    out: dict = {"counts": list(args.candidates), "indexes": {}, "peer": {}, "production": {}}
    ordered = users[:max(args.sweep_requests, 50)]  # the same requests for every arm and every count
    with Progress(console=console, transient=True) as progress:
        for index in args.sweep_index:
            t0 = time.monotonic()
            with start_cluster(bundle, port=0, index=index, extra={"ranker_svc": PLAIN_RANKER}) as cluster:
                start_s = time.monotonic() - t0
                memory = {name: rss_mb(s.proc.pid) for name, s in cluster.services.items()}
                floor = Floor(bundle, index)
                try:
                    res: dict = {"cluster_start_s": start_s, "floor_load_s": floor.load_s, "rss_mb": memory}
                    res["sweep"] = _sweep(progress, f"{index}: candidate sweep, cluster vs floor", cluster, floor,
                                          ordered, args)
                    rate_n = max(args.candidates)
                    set_candidates(cluster, rate_n)
                    task = progress.add_task(f"{index}: throughput at {rate_n} candidates", total=None)
                    load = concurrent(cluster.target, users[:5000], concurrency=args.concurrency,
                                      duration=min(args.duration, 10.0))
                    res["throughput"] = load | {"n_candidates": rate_n}
                    if args.rate_p99_ms > 0:
                        from recsys.bench_rate import max_rate

                        res["max_rate"] = max_rate(cluster.target, users[:5000], load["throughput_rps"],
                                                   args.rate_p99_ms) | {"n_candidates": rate_n}
                    progress.remove_task(task)
                    res["rss_mb_after"] = {name: rss_mb(s.proc.pid) for name, s in cluster.services.items()}
                    out["indexes"][index] = res
                    if index == args.sweep_index[0] and args.peer:
                        out["peer"] = _peers(progress, bundle, index, cluster, floor, ordered, args, console)
                    if index == args.sweep_index[0] and args.production:
                        from recsys.bench_production import production_paths

                        out["production"] = production_paths(cluster, bundle, users[-(args.sweep_requests + 40):],
                                                             Path(args.workdir), console, max(args.candidates),
                                                             args.sweep_requests, args.sweep_block, index)
                finally:
                    floor.close()
    return out


def _peers(progress: Progress, bundle: Path, index: str, cluster, floor, users, args, console: Console) -> dict:
    from recsys.bench_peer import CONFIGS, Peer, missing

    why = missing()
    if why:
        console.print(f"[yellow]peer skipped:[/yellow] {why}")
        return {"skipped": why}
    out: dict = {}
    for config in CONFIGS:
        task = progress.add_task(f"Ray Serve peer ({config}): starting", total=None)
        try:
            with Peer(bundle, index, config) as peer:
                progress.remove_task(task)
                rows = _sweep(progress, f"Ray Serve peer ({config}) vs cluster vs floor", cluster, floor, users,
                              args, peer=peer)
                out[config] = {"start_s": peer.start_s, "sweep": rows}
        except RuntimeError as exc:  # the peer's failure must not lose the rest of the bench
            console.print(f"[red]peer {config} failed:[/red] {exc}")
            out[config] = {"error": str(exc)}
        finally:
            if task in progress.task_ids:
                progress.remove_task(task)
    fastest = [(c, r["sweep"]) for c, r in out.items() if "sweep" in r]
    if fastest:
        best: dict = {}
        for i, n in enumerate(args.candidates):
            config, rows = min(fastest, key=lambda cr: cr[1][i]["peer"].get("p50_ms", float("inf")))
            best[str(n)] = {"config": config, "peer_p50_ms": rows[i]["peer"].get("p50_ms"),
                            "cluster_p50_ms": rows[i]["cluster"].get("p50_ms"),
                            "cluster_over_peer_p50": rows[i]["cluster_over_peer_p50"]}
        out["fastest"] = best
    return out
