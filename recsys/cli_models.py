"""`recsys models history`: every trained version's validation metrics from the registry history, as a
table and a PNG plot over training time with the champion changes marked (issue 12, "quality over time").

The numbers are those `recsys train` measured on its validation split (the bundle's `valid_*` metrics);
online click-through by version is on the dashboard (recsys_model_clicks_total), not here.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from recsys.display import console
from recsys.registry import GATE_METRIC, ChampionChange, Registry, TrainedModel

DEFAULT_PLOT = "model-history.png"
DEFAULT_COUNT = 4
PREFERRED = (GATE_METRIC, "valid_recall@10", "valid_auc", "valid_no_diversity_ndcg@10", "valid_map@10")
# How each kind of champion change is drawn: colour, line style, legend label.
_CHANGE_STYLE = {"promote": ("tab:green", "--", "promoted"), "forced": ("tab:orange", "--", "promoted (forced)"),
                 "rollback": ("tab:red", ":", "rolled back to")}


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `models history` on the `models` parser."""
    parser.add_argument("--metric", action="append", default=[],
                        help=f"history: a metric to show and plot (repeatable; default: {DEFAULT_COUNT} valid_* ones, "
                             "the gate's first)")
    parser.add_argument("--plot", default=DEFAULT_PLOT,
                        help=f"history: where to write the PNG plot (default {DEFAULT_PLOT}; '' for none)")


def chosen_metrics(models: list[TrainedModel], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(the metrics to show, the valid_* ones left out). Those asked for (each must occur in some version),
    else the gate's and up to DEFAULT_COUNT - 1 more valid_* ones, PREFERRED first: a table of every metric
    does not fit a terminal."""
    present = {k for m in models for k in m.metrics}
    valid = sorted(k for k in present if k.startswith("valid_"))
    if wanted:
        unknown = [w for w in wanted if w not in present]
        if unknown:
            raise ValueError(f"no version in the history has {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(present)) or 'none'})")
        shown = list(dict.fromkeys(wanted))
    else:
        rank = {k: i for i, k in enumerate(PREFERRED)}
        shown = sorted(valid, key=lambda k: (rank.get(k, len(rank)), k))[:DEFAULT_COUNT]
    return shown, [k for k in valid if k not in shown]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def history_table(models: list[TrainedModel], metrics: list[str], champion: str | None, live: list[str],
                  present: set[str], title: str) -> Table:
    table = Table(title=title, caption="validation metrics measured by `recsys train`; times UTC")
    table.add_column("version", no_wrap=True)  # the one column a reader must see whole
    table.add_column("trained", justify="right", min_width=10)
    table.add_column("dataset", min_width=10, max_width=24)
    for col in metrics:
        table.add_column(col.removeprefix("valid_"), justify="right", min_width=6)
    table.add_column("champion since", justify="right", min_width=10)
    table.add_column("", no_wrap=True)
    for m in models:
        status = ("champion" if m.version == champion else "live" if m.version in live else
                  "" if m.version in present else "bundle gone")
        if not m.recorded:
            status = (status + ", " if status else "") + "not in history"
        table.add_row(escape(m.version), _when(m.created), escape(m.dataset),
                      *(f"{m.metrics[k]:.4f}" if k in m.metrics else "-" for k in metrics),
                      ", ".join(_when(t) for t in m.champion_at), status)
    return table


def write_plot(models: list[TrainedModel], changes: list[ChampionChange], metrics: list[str],
               champion: str | None, path: Path, title: str) -> None:
    """One panel per metric: each version a point at its training time, champions as stars, a vertical line
    at each change of champion. Figure without pyplot: no GUI backend, no global state."""
    from matplotlib.figure import Figure

    cols = 1 if len(metrics) == 1 else 2
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(7 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
    champions = {m.version for m in models if m.champion_at}
    for ax, metric in zip(axes, metrics, strict=False):
        have = [m for m in models if metric in m.metrics]
        xs = [datetime.fromtimestamp(m.created, UTC) for m in have]
        ys = [m.metrics[metric] for m in have]
        ax.plot(xs, ys, color="0.6", linewidth=1, zorder=1)
        ax.scatter(xs, ys, color="tab:blue", s=18, zorder=2, label="trained version")
        best = [(x, y) for x, y, m in zip(xs, ys, have, strict=True) if m.version in champions]
        if best:
            ax.scatter(*zip(*best, strict=True), marker="*", s=140, color="gold", edgecolor="black", zorder=3,
                       label="was champion")
        for x, y, m in zip(xs, ys, have, strict=True):
            if m.version == champion:
                ax.annotate(m.version, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
        drawn: set[str] = set()
        for c in changes:
            color, style, label = _CHANGE_STYLE[c.how]
            ax.axvline(datetime.fromtimestamp(c.at, UTC), color=color, linestyle=style, linewidth=1, zorder=0,
                       label=None if c.how in drawn else label)
            drawn.add(c.how)
        ax.set_title(metric, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    for ax in axes[-cols:]:
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)


def models_history(registry: Registry, args: argparse.Namespace) -> int:
    """Print the table and write the plot; 2 on a bad history line, an unknown metric or an unwritable plot."""
    models, changes = registry.timeline()
    if not models:
        console.print(f"no trained versions in {registry.root} (train with `recsys train --registry`)")
        return 0
    try:
        metrics, others = chosen_metrics(models, args.metric)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    champion, live = registry.champion(), registry.live()
    present = {m.version for m in registry.bundles()}
    title = f"model history of {registry.root}"
    console.print(history_table(models, metrics, champion, live, present, title))
    console.print(f"{len(models)} versions, {len(changes)} changes of champion; champion now {champion or '(none)'}")
    if others:
        console.print(f"also recorded (show with --metric): {', '.join(others)}", soft_wrap=True)
    if args.plot and not metrics:
        console.print("no validation metrics recorded: no plot written")
    elif args.plot:
        path = Path(args.plot)
        if not path.parent.is_dir():
            console.print(f"[red]error:[/red] --plot {escape(str(path))}: directory {escape(str(path.parent))} "
                          "does not exist", soft_wrap=True)
            return 2
        write_plot(models, changes, metrics, champion, path, title)
        console.print(f"plot written to {escape(str(path))}")
    return 0
