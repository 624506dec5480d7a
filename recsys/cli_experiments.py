"""`recsys experiments validate|list|status FILE`: check an experiments file, show what it declares, and
show what is running now (with a ranker's /metrics, the answers per arm)."""

from __future__ import annotations

import argparse
import datetime as dt
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from recsys.experiments.assignment import BUCKETS
from recsys.experiments.config import ConfigError, Experiment, ExperimentsConfig, load_config


def _load(args: argparse.Namespace, console: Console) -> ExperimentsConfig | None:
    live = None
    if getattr(args, "registry", None):
        from recsys.registry import Registry

        live = set(Registry(args.registry).live())
    try:
        return load_config(args.file, live)
    except ConfigError as exc:
        console.print(f"[red]error[/red] {exc}", highlight=False)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    console = Console()
    config = _load(args, console)
    if config is None:
        return 2
    n = len(config.experiments())
    running = sum(e.status == "running" for e in config.experiments())
    console.print(f"{args.file}: valid: {len(config.layers)} layers, {n} experiments ({running} running)"
                  + (f", versions checked against {args.registry}" if args.registry else ""), highlight=False)
    return 0


def _share(exp: Experiment, config: ExperimentsConfig) -> float:
    """The share of all units the experiment admits (before targeting)."""
    held = config.holdout.share if config.holdout else 0.0
    return (exp.buckets[1] - exp.buckets[0]) / BUCKETS * exp.coverage * (1 - held)


def cmd_list(args: argparse.Namespace) -> int:
    console = Console()
    config = _load(args, console)
    if config is None:
        return 2
    t = Table(title=f"experiments in {args.file}")
    for col in ("layer", "experiment", "status", "buckets", "coverage", "unit", "arms (weight → version)",
                "targeting"):
        t.add_column(col)
    for layer in config.layers:
        for e in layer.experiments:
            arms = ", ".join(f"{a.name}{'*' if a.control else ''} {a.weight:g} → {a.model_version}"
                             + (f" {a.overrides}" if a.overrides else "") for a in e.arms)
            tg = e.targeting
            targeting = "; ".join(x for x in (
                f"surface {','.join(tg.surface)}" if tg.surface else "",
                f"device {','.join(tg.device)}" if tg.device else "",
                f"users {tg.users}" if tg.users != "all" else "",
                *(f"{k} {','.join(v)}" for k, v in tg.attributes.items())) if x) or "all"
            t.add_row(layer.name, e.name, e.status, f"[{e.buckets[0]}, {e.buckets[1]})", f"{e.coverage:.0%}", e.unit,
                      arms, targeting)
    console.print(t)
    if config.holdout:
        console.print(f"global holdout: {config.holdout.share:.1%} of units (salt {config.holdout.salt})")
    return 0


def _arm_counts(url: str) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    counts: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "recsys_experiment_requests_total" and s.labels.get("forced") == "false":
                key = (s.labels["experiment"], s.labels["arm"])
                counts[key] = counts.get(key, 0.0) + s.value
    return counts


def cmd_status(args: argparse.Namespace) -> int:
    console = Console()
    config = _load(args, console)
    if config is None:
        return 2
    now = dt.datetime.now(dt.UTC)
    counts = _arm_counts(args.metrics) if args.metrics else {}
    t = Table(title=f"experiments now ({now:%Y-%m-%d %H:%M} UTC)")
    for col in ("experiment", "state", "units admitted", "arm", "target share", "answers", "observed share"):
        t.add_column(col)
    for e in config.experiments():
        if e.status != "running":
            state = e.status
        elif e.start and now < e.start:
            state = f"starts {e.start:%Y-%m-%d %H:%M}"
        elif e.end and now >= e.end:
            state = f"ended {e.end:%Y-%m-%d %H:%M}"
        else:
            state = "running"
        total_w = sum(a.weight for a in e.arms)
        total_n = sum(counts.get((e.name, a.name), 0.0) for a in e.arms)
        for i, a in enumerate(e.arms):
            n = counts.get((e.name, a.name))
            t.add_row(e.name if i == 0 else "", state if i == 0 else "", f"{_share(e, config):.1%}" if i == 0 else "",
                      a.name + (" (control)" if a.control else ""), f"{a.weight / total_w:.1%}",
                      "" if n is None else f"{n:,.0f}", f"{n / total_n:.1%}" if n and total_n else "")
    console.print(t)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from recsys.experiments.analysis import analyse, collect
    from recsys.experiments.report import print_report, stream_records, to_json, write_markdown

    console = Console()
    exposures, events = stream_records(args.stream)
    collected = collect(args.experiment, exposures, events)
    arms, weights, control, planned = sorted({u.arm for u in collected.units.values()}), None, args.control, args.days
    if args.file:
        config = _load(args, console)
        if config is None:
            return 2
        exp = next((e for e in config.experiments() if e.name == args.experiment), None)
        if exp is None:
            console.print(f"[red]error[/red] {args.file}: no experiment {args.experiment!r}", highlight=False)
            return 2
        arms, weights = [a.name for a in exp.arms], [a.weight for a in exp.arms]
        control = next(a.name for a in exp.arms if a.control)
        if planned is None and exp.start and exp.end:
            planned = max(1, round((exp.end - exp.start).total_seconds() / 86_400))
    if not collected.units:
        console.print(f"no exposures of experiment {args.experiment!r} on {args.stream}", highlight=False)
        return 1
    if control not in arms:
        console.print(f"[red]error[/red] --control: {control!r} is not an arm ({', '.join(arms)})", highlight=False)
        return 2
    report = analyse(args.experiment, collected, arms, weights or [1.0] * len(arms), control, planned)
    print_report(report, console)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(report), indent=1))
    if args.report:
        console.print(f"report: {write_markdown(report, Path(args.report))}", highlight=False)
    return 0


def add_commands(sub) -> None:
    ex = sub.add_parser("experiments", help="A/B experiments: check and inspect an experiments file")
    ex_sub = ex.add_subparsers(dest="experiments_command", required=True)
    for name, func, helptext in (("validate", cmd_validate, "check a file (FILE:LINE: key: reason on error)"),
                                 ("list", cmd_list, "the layers, experiments and arms a file declares"),
                                 ("status", cmd_status, "what runs now; with --metrics, answers per arm")):
        p = ex_sub.add_parser(name, help=helptext)
        p.add_argument("file", help="the experiments file (YAML)")
        p.add_argument("--registry", help="model registry: arms of running experiments must name live versions")
        if name == "status":
            p.add_argument("--metrics", help="a ranker's metrics URL, e.g. http://127.0.0.1:9101/metrics")
        p.set_defaults(func=func)
    r = ex_sub.add_parser("report", help="per-arm results of an experiment from the event stream, and a verdict")
    r.add_argument("--experiment", required=True)
    r.add_argument("--stream", required=True, help="the event stream URL (file://DIR or redis://...)")
    r.add_argument("--file", help="the experiments file: arms, weights, control and planned days")
    r.add_argument("--control", default="control", help="the control arm when no --file is given")
    r.add_argument("--days", type=int, help="planned duration in days (default: the file's start to end)")
    r.add_argument("--registry", help=argparse.SUPPRESS)
    r.add_argument("--report", help="directory for a Markdown report with plots")
    r.add_argument("--json", help="write the figures as JSON")
    r.set_defaults(func=cmd_report)
