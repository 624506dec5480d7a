"""`recsys simulate`: synthetic users with known tastes use a running cluster for simulated days
(recsys/simulation); then, for an experiment, the report from what the stream recorded."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from recsys.simulation.driver import SimulationResult


def print_result(result: SimulationResult, console: Console) -> None:
    console.print(f"{result.requests:,} Recommend calls, {result.clicks:,} clicks, {result.purchases:,} purchases, "
                  f"{result.organic:,} organic views in {result.seconds:.1f} s; {result.errors} errors, "
                  f"{result.rejected} events rejected", highlight=False)
    if not result.arms:
        return
    t = Table(title="per arm, by the simulation's truth")
    for col in ("experiment=arm", "units", "requests", "CTR", "clicks / request", "expected clicks / request"):
        t.add_column(col, justify="right")
    for name, a in sorted(result.arms.items()):
        d = a.as_dict()
        t.add_row(name, f"{d['units']:,}", f"{a.requests:,}", f"{a.clicks / max(a.impressions, 1):.2%}",
                  f"{a.clicks / max(a.requests, 1):.3f}", f"{d['expected_clicks_per_request']:.3f}")
    console.print(t)


def wait_for_exposures(stream: str, experiment: str, expected: int, timeout_s: float = 15.0) -> int:
    """The exposure writer appends in the background: wait (bounded) until the stream holds them all."""
    from recsys.experiments.analysis import collect
    from recsys.experiments.report import stream_records

    deadline = time.monotonic() + timeout_s
    while True:
        exposures, events = stream_records(stream)
        seen = sum(len(u.exposures) for u in collect(experiment, exposures, []).units.values())
        if seen >= expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys.data.spec import parse_synthetic
    from recsys.data.synthetic import generate_world
    from recsys.simulation.click_model import ClickModel
    from recsys.simulation.driver import Simulation, SimulationConfig
    from recsys.simulation.population import Population

    console = Console()
    scheme, _, options = args.dataset.partition(":")
    if scheme != "synthetic":
        console.print(f"[red]error[/red] --dataset: a simulation needs the synthetic generator's true tastes, "
                      f"got {args.dataset!r}", highlight=False)
        return 2
    try:
        world = generate_world(**parse_synthetic(options))
        config = SimulationConfig(days=args.days, pre_days=args.pre_days, k=args.k, concurrency=args.concurrency,
                                  seed=args.seed, return_rate=args.return_rate, surface=args.surface)
    except ValueError as exc:
        console.print(f"[red]error[/red] {exc}", highlight=False)
        return 2
    sim = Simulation(args.target, Population.of(world, args.users, args.seed), ClickModel(), config)
    with Progress(TextColumn("simulating {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"{args.days} days of {min(args.users, len(world.taste)):,} users",
                                 total=sim.total_user_days())
        result = asyncio.run(sim.run(lambda: progress.advance(task)))
    print_result(result, console)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"requests": result.requests, "errors": result.errors, "clicks": result.clicks,
             "purchases": result.purchases, "organic": result.organic, "seconds": round(result.seconds, 2),
             "arms": {k: v.as_dict() for k, v in result.arms.items()}}, indent=1))
    if result.requests == 0:
        console.print(f"[red]error[/red] no Recommend call succeeded on {args.target}", highlight=False)
        return 1
    if not args.experiment:
        return 0
    from recsys.cli_experiments import cmd_report

    expected = sum(a.requests for k, a in result.arms.items() if k.split("=", 1)[0] == args.experiment)
    wait_for_exposures(args.stream, args.experiment, expected)
    return cmd_report(argparse.Namespace(experiment=args.experiment, stream=args.stream, file=args.file,
                                         control=args.control, days=args.days, registry=None, report=args.report,
                                         json=args.report_json))


def add_command(sub) -> None:
    s = sub.add_parser("simulate", help="simulated users with known tastes use a running cluster; then the "
                       "experiment's report")
    s.add_argument("--target", default="127.0.0.1:50051", help="the Recommend API")
    s.add_argument("--dataset", default="synthetic",
                   help="the synthetic spec the served bundles were trained on (its users are the population)")
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--days", type=int, default=7)
    s.add_argument("--pre-days", type=int, default=2, help="days of organic activity before the experiment")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--return-rate", type=float, default=0.5, help="chance a user comes back on a later day")
    s.add_argument("--surface", default="home")
    s.add_argument("--concurrency", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", help="write the simulation's own tallies as JSON")
    s.add_argument("--experiment", help="then report this experiment (needs --stream)")
    s.add_argument("--stream", default="file://recsys-data/events", help="the cluster's event stream URL")
    s.add_argument("--file", help="the experiments file: arms, weights and control")
    s.add_argument("--control", default="control")
    s.add_argument("--report", help="directory for the experiment's Markdown report with plots")
    s.add_argument("--report-json", help="write the experiment's report as JSON")
    s.set_defaults(func=cmd_simulate)
