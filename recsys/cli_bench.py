"""`recsys bench` (`make bench`): its arguments; the run itself is recsys/bench.py (docs/bench.md)."""

from __future__ import annotations

import argparse

from recsys.retrieval import INDEX_KINDS


def cmd_bench(args: argparse.Namespace) -> int:
    from recsys.bench import run_bench
    from recsys.display import console

    return run_bench(args, console)


def _counts(text: str) -> list[int]:
    from recsys.bench_sweep import parse_counts

    return parse_counts(text)


def _indexes(text: str) -> list[str]:
    kinds = [x.strip() for x in text.split(",") if x.strip()]
    if not kinds or any(k not in INDEX_KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"index kinds are {', '.join(INDEX_KINDS)} (comma-separated), got {text!r}")
    return kinds


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_command(sub) -> None:
    b = sub.add_parser("bench", help="latency and throughput of Recommend through the three services")
    b.add_argument("--items", type=int, default=100_000)
    b.add_argument("--users", type=int, default=20_000)
    b.add_argument("--interactions", type=int, default=1_000_000)
    b.add_argument("--requests", type=int, default=1000, help="sequential requests (single client)")
    b.add_argument("--concurrency", type=int, default=16, help="in-flight requests for the throughput run")
    b.add_argument("--duration", type=float, default=20.0, help="seconds of the throughput run")
    b.add_argument("--index", default="exact", choices=INDEX_KINDS)
    b.add_argument("--json", default="bench.json")
    b.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure Feedback/Send ingestion, event-to-visible latency, the cache and exposures")
    b.add_argument("--workdir", default="bundles")
    b.add_argument("--experiments", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure assignment and the cost of a 10%% shadow share (a second cluster)")
    b.add_argument("--production", action=argparse.BooleanOptionalAction, default=True,
                   help="also the overload curve, and the cost of mTLS and of tracing (more clusters)")
    b.add_argument("--chaos", action=argparse.BooleanOptionalAction, default=True,
                   help="kill each service (and Redis) in turn under a steady load and measure the recovery")
    b.add_argument("--ann-items", type=int, default=1_000_000,
                   help="also recall@500 and per-query cost of the HNSW and IVF indexes against exact search on "
                        "this many synthetic 64-dimensional item vectors (0: skip)")
    b.add_argument("--scale", action=argparse.BooleanOptionalAction, default=True,
                   help="also the catalog-scale section (issue 13; docs/bench.md): the candidate sweep against the "
                        "in-process floor, per stage and hop, throughput and the highest rate held, memory and "
                        "start time per service, the Ray Serve peer and, with --production, the production "
                        "configuration's cache miss and hit paths")
    b.add_argument("--candidates", type=_counts, default=[25, 100, 300, 500],
                   help="candidate counts of the sweep (comma-separated; default 25,100,300,500)")
    b.add_argument("--sweep-index", type=_indexes, default=["exact", "hnsw"],
                   help=f"index kinds of the sweep (comma-separated: {', '.join(INDEX_KINDS)}; default exact,hnsw)")
    b.add_argument("--sweep-requests", type=_positive, default=200,
                   help="requests per candidate count and per arm (cluster, floor, peer)")
    b.add_argument("--sweep-block", type=_positive, default=25, help="requests per interleaved block")
    b.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also the Ray Serve peer (needs the bench extra: pip install -e '.[bench]')")
    b.add_argument("--rate-p99-ms", type=float, default=50.0,
                   help="search the highest open-loop rate held with p99 within this bound (0: skip)")
    b.set_defaults(func=cmd_bench)
