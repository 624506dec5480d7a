"""The `recsys` command: train, serve, query, evaluate, benchmark and demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from recsys.cli_bench import add_command as add_bench_command
from recsys.cli_events import add_commands as add_event_commands
from recsys.cli_experiments import add_commands as add_experiment_commands
from recsys.cli_models import add_history_arguments, models_history
from recsys.cli_simulate import add_command as add_simulate_command
from recsys.cli_users import add_commands as add_user_commands
from recsys.display import console, print_recommendations
from recsys.display import load_dataset_or_exit as _load
from recsys.retrieval import INDEX_KINDS

# Every spec form recsys.data.spec.load_dataset accepts (kept here: importing recsys.data would load pandas).
DATASET_HELP = (
    "dataset spec: synthetic[:users=N,items=N,interactions=N,categories=N,seed=N,dim=N,days=N] | "
    "movielens-100k:PATH (the unzipped ml-100k folder) | movielens:PATH (ratings.csv and movies.csv, "
    "ml-latest layout) | lastfm:PATH (Last.fm hetrec2011-lastfm-2k: play counts, friends, no timestamps) | "
    "a canonical directory (interactions.csv, optional items.csv and users.csv)"
)


def cmd_train(args: argparse.Namespace) -> int:
    from recsys.training.config import TrainConfig, TrainConfigError
    from recsys.training.trainer import train

    try:
        cfg = TrainConfig.from_file(Path(args.config)) if args.config else TrainConfig()
    except TrainConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    if args.seed is not None:
        cfg.seed = args.seed
    t0 = time.time()
    with console.status(f"loading {args.dataset}"):
        ds = _load(args.dataset)
    console.print(f"dataset {ds.name}: {len(ds.interactions):,} interactions, "
                  f"{ds.interactions['user_id'].nunique():,} users, {ds.interactions['item_id'].nunique():,} items")
    stream_position, forgotten_through_ms = None, 0
    if args.events:
        from recsys.events.export import exported_forgotten, merge_events

        ds, stream_position = merge_events(ds, Path(args.events))
        forgotten_through_ms = exported_forgotten(Path(args.events))[1]
        console.print(f"with the stream events of {args.events} (up to position {stream_position}): "
                      f"{len(ds.interactions):,} interactions")
    for note in ds.notes:
        console.print(f"  cleaning: {note}")
    version, parent, out = None, None, Path(args.out or "")
    if args.registry:
        from recsys.bundle import BundleMetadata
        from recsys.registry import Registry

        registry = Registry(args.registry)
        registry.root.mkdir(parents=True, exist_ok=True)
        version = BundleMetadata.new_version(time.time())
        parent, out = registry.champion(), registry.path(version)
    meta = train(ds, out, cfg, dataset_spec=args.dataset, parent=parent, version=version,
                 stream_position=stream_position, forgotten_through_ms=forgotten_through_ms)
    if args.registry:
        registry.record_trained(meta)  # the validation metrics outlive the bundle (`recsys models history`)
    table = Table(title=f"bundle {meta.version} -> {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(meta.metrics.items()):
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(table)
    if meta.params.get("selection", {}).get("reasons"):
        from recsys.training.select import table as selection_table

        console.print(selection_table(meta.params["selection"]))
    console.print(f"trained in {time.time() - t0:.1f}s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from recsys.cluster import start_cluster

    # Handlers first: a SIGTERM that arrives while the services are starting must still stop them all.
    stopping = rolling = False

    def on_signal(signum, frame):
        nonlocal stopping, rolling
        if signum == signal.SIGHUP:
            rolling = True
        else:
            stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with console.status("starting feature_svc, candidate_svc, ranker_svc"):
        cluster = start_cluster([Path(b) for b in args.bundle] if args.bundle else None, args.port,
                                registry=Path(args.registry) if args.registry else None,
                                reload_interval=args.reload_interval, storage=args.storage, index=args.index,
                                stream=_absolute_stream(args.stream), replicas=args.replicas)
    try:
        for svc in cluster.services.values():
            console.print(f"{svc.name:14s} pid {svc.proc.pid:<7d} grpc {svc.address:22s} "
                          f"metrics http://127.0.0.1:{svc.metrics_port}/metrics")
        console.print(f"Recommend is on {cluster.target}; logs in {cluster.log_dir}. Ctrl-C stops everything; "
                      f"SIGHUP (kill -HUP {os.getpid()}) restarts every service in turn.")
        while not stopping:  # a service that dies is restarted with backoff; the others keep serving
            if rolling:  # with --replicas 2 or more, callers retrying UNAVAILABLE lose no call
                rolling = False
                try:
                    cluster.rolling_restart(on_event=lambda e: console.print(f"[cyan]{escape(e)}[/cyan]"))
                except RuntimeError as exc:  # a replica that does not come back is left to the supervisor
                    console.print(f"[red]rolling restart stopped: {escape(str(exc))}[/red]")
            for event in cluster.supervise():
                console.print(f"[yellow]{escape(event)}[/yellow]")
                logging.getLogger("recsys.up").warning(event)
            time.sleep(0.2)
    finally:
        cluster.stop()
    console.print("stopped")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _absolute_stream(url: str) -> str:
    """A relative file:// stream means relative to where `recsys up` was started."""
    if url.startswith("file://") and not url.startswith("file:///"):
        return "file://" + str(Path(url[len("file://"):]).resolve())
    return url


def cmd_recommend(args: argparse.Namespace) -> int:
    import grpc

    from recsys.client import RecommenderClient

    attrs = dict(a.split("=", 1) for a in args.attr)
    fields = {"explain": args.explain, "exclude_item_ids": args.exclude, "user_attributes": attrs}
    if args.diversity is not None:
        fields["diversity_lambda"] = args.diversity
    with RecommenderClient(args.target) as client:
        try:
            resp = client.recommend(args.user, args.k, timeout=args.timeout, **fields)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/red]: {escape(exc.details() or '')}", soft_wrap=True)
            return 1
    print_recommendations(resp, f"top {args.k} for user {args.user}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recsys.demo import run_demo

    return run_demo(Path(args.workdir), console)


def cmd_eval(args: argparse.Namespace) -> int:
    from recsys.evaluation.runner import run_eval

    return run_eval(args, console)


def cmd_models(args: argparse.Namespace) -> int:
    from recsys.bundle import BundleError
    from recsys.registry import Registry

    registry = Registry(args.registry)
    try:
        if args.action == "list":
            champion, live = registry.champion(), registry.live()
            table = Table(title=f"models in {registry.root}")
            for col in ("version", "created", "dataset", "valid_ndcg@10", "no-div ndcg@10", "parent", ""):
                table.add_column(col)
            for m in registry.bundles():
                table.add_row(m.version, time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.created)), m.dataset,
                              f"{m.metrics.get('valid_ndcg@10', float('nan')):.4f}",
                              f"{m.metrics.get('valid_no_diversity_ndcg@10', float('nan')):.4f}",
                              m.parent or "", "champion" if m.version == champion else
                              "live" if m.version in live else "")
            console.print(table)
            return 0
        if args.action == "live":
            return _models_live(registry, args.version or "list", args.target)
        if args.action == "history":
            return models_history(registry, args)
        if args.action == "promote":
            decision = registry.promote(args.version, tolerance=args.tolerance, force=args.force)
            console.print(decision.summary(), soft_wrap=True)
            return 0 if decision.promoted or decision.reason == "already the champion" else 3
        target = registry.rollback()
        console.print(f"rolled back: champion is now {target}")
        return 0
    except BundleError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2


def _models_live(registry, op: str, version: str | None) -> int:
    """`recsys models live [list|add V|remove V]`: the versions every service holds beside the champion."""
    if op not in ("list", "add", "remove"):
        console.print(f"[red]error:[/red] models live: expected list, add VERSION or remove VERSION, got {op!r}")
        return 2
    if op != "list":
        if not version:
            console.print(f"[red]error:[/red] models live {op}: name the VERSION")
            return 2
        (registry.add_live if op == "add" else registry.remove_live)(version)
    champion, serving = registry.serving()
    console.print(f"champion: {champion or '(none)'}; live: {', '.join(registry.live()) or '(none)'}", soft_wrap=True)
    console.print(f"every service holds: {', '.join(serving) or '(nothing)'}", soft_wrap=True)
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """Load a bundle's feature tables into a (shared) feature store, e.g. Redis before a rollout."""
    from recsys.bundle import BundleError, read_metadata
    from recsys.forget import TombstonesUnavailable, open_tombstones
    from recsys.storage import StorageError, open_storage, version_namespace
    from recsys.storage.bundle_loader import load_bundle_features

    try:  # each model version has its own namespace in a shared store, where feature_svc reads it
        storage = open_storage(args.storage, namespace=version_namespace(read_metadata(Path(args.bundle)).version))
    except BundleError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    try:
        with console.status(f"loading {args.bundle} into {args.storage}"), open_tombstones(args.stream) as registry:
            version = load_bundle_features(storage, Path(args.bundle), registry.forgotten()).version
    except (BundleError, StorageError, TombstonesUnavailable) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    finally:
        storage.close()
    console.print(f"features of bundle {version} loaded into {args.storage}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from recsys.tuning import run_tune

    return run_tune(args, console)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description="Recommendation serving stack.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model bundle")
    t.add_argument("--dataset", required=True, help=DATASET_HELP)
    where = t.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="bundle directory to write")
    where.add_argument("--registry", help="model registry directory: write a new candidate version into it")
    t.add_argument("--config", help="training config (YAML/JSON), e.g. the output of `recsys tune`")
    t.add_argument("--seed", type=int)
    t.add_argument("--events", help="also train on events exported from the stream (`recsys events export`)")
    t.set_defaults(func=cmd_train)

    u = sub.add_parser("up", help="start the three services on loopback")
    src = u.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", action="append", help="bundle directory (repeat for more versions)")
    src.add_argument("--registry", help="model registry: serve the champion, follow promotions")
    u.add_argument("--reload-interval", type=float, default=5.0, help="seconds between registry checks")
    u.add_argument("--port", type=int, default=50051, help="port of the Recommend API")
    u.add_argument("--storage", default="embedded://", help="feature storage URL (embedded:// or redis://...)")
    u.add_argument("--index", default="exact", choices=INDEX_KINDS)
    u.add_argument("--replicas", type=_positive_int, default=1,
                   help="processes per service (2 or more: SIGHUP restarts them in turn without a failed call)")
    u.add_argument("--stream", default="file://recsys-data/events",
                   help="event stream URL: file://DIR (embedded, survives restarts) or redis://host:port/db")
    u.set_defaults(func=cmd_up)

    r = sub.add_parser("recommend", help="call Recommend and print a table")
    r.add_argument("--user", required=True)
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--target", default="127.0.0.1:50051")
    r.add_argument("--explain", action="store_true")
    r.add_argument("--diversity", type=float, help="MMR λ in [0, 1] (1 = relevance only)")
    r.add_argument("--exclude", action="append", default=[], help="item id to exclude (repeatable)")
    r.add_argument("--attr", action="append", default=[], help="user attribute key=value for new users")
    r.add_argument("--timeout", type=float, default=5.0)
    r.set_defaults(func=cmd_recommend)

    d = sub.add_parser("demo", help="train on synthetic data, start the stack, show recommendations")
    d.add_argument("--workdir", default="bundles")
    d.set_defaults(func=cmd_demo)

    add_bench_command(sub)

    e = sub.add_parser("eval", help="offline evaluation of the serving pipeline")
    e.add_argument("--dataset", required=True, help=DATASET_HELP)
    e.add_argument("--protocol", default="msr", choices=["msr", "msr-user", "temporal"],
                   help="msr: stratified 75/25 per item (the MS Recommenders benchmark); msr-user: stratified "
                        "per user; temporal: each user's last 20%% by time")
    e.add_argument("--k", type=int, default=10)
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--config", help="training config (YAML/JSON)")
    e.add_argument("--json", help="write the results as JSON")
    e.add_argument("--report", help="directory for a report with plots")
    e.add_argument("--frontier", action="store_true",
                   help="also the re-ranking frontier: MMR, calibrated, category caps and long-tail over a grid, "
                        "on a validation split and the test split (two more trainings)")
    e.add_argument("--groups", help="user attributes for the fairness audit, comma-separated, or 'all' "
                                    "(default: gender and age_band, the bands <25/25-34/35-44/45+ of age_bucket)")
    e.add_argument("--ease-memory-gb", type=float, default=None,
                   help="memory the dense EASE baseline may take (its items² matrix), in GB; it is skipped, with "
                        "a note of what it needs, when that is more (default: half the memory available; 0: off)")
    e.set_defaults(func=cmd_eval)

    mo = sub.add_parser("models", help="the model registry: list, history, promote (with the gate), roll back")
    mo.add_argument("action", choices=["list", "history", "promote", "rollback", "live"])
    mo.add_argument("version", nargs="?", help="promote: the version (default: the newest); live: list, add or remove")
    mo.add_argument("target", nargs="?", help="live add/remove: the version")
    mo.add_argument("--registry", required=True, help="model registry directory")
    mo.add_argument("--tolerance", type=float, default=0.005,
                    help="promote: largest allowed drop of validation nDCG@10 versus the champion")
    mo.add_argument("--force", action="store_true", help="promote: skip the metric gate (never the load check)")
    add_history_arguments(mo)
    mo.set_defaults(func=cmd_models)

    fe = sub.add_parser("features", help="feature store maintenance")
    fe.add_argument("action", choices=["load"])
    fe.add_argument("--bundle", required=True, help="bundle whose feature tables to load")
    fe.add_argument("--storage", required=True, help="feature storage URL, e.g. redis://host:6379/0")
    fe.add_argument("--stream", default=os.environ.get("RECSYS_STREAM", "file://recsys-data/events"),
                    help="event stream URL: forgotten users (its registry) are left out of the load")
    fe.set_defaults(func=cmd_features)

    tu = sub.add_parser("tune", help="Ray Tune search over retrieval and ranker hyperparameters")
    tu.add_argument("--dataset", required=True, help=DATASET_HELP)
    tu.add_argument("--trials", type=int, default=16)
    tu.add_argument("--address", help="existing Ray cluster (e.g. ray://head:10001); default: local Ray")
    tu.add_argument("--cpus", type=int, default=2, help="CPUs for local Ray")
    tu.add_argument("--out", default="tuned.yaml", help="where to write the best configuration")
    tu.add_argument("--seed", type=int, default=42)
    tu.add_argument("--config", help="base training config to start the search from (YAML/JSON)")
    tu.set_defaults(func=cmd_tune)
    add_event_commands(sub)
    add_experiment_commands(sub)
    add_simulate_command(sub)
    add_user_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
