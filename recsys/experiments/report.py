"""`recsys experiments report`: read an experiment's exposures and outcomes from the stream, analyse
(recsys/experiments/analysis.py) and print, write JSON, and write a Markdown report with plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys.events.codec import EXPOSURE_TOPIC
from recsys.experiments.analysis import METRICS, Report
from recsys.stream import EventStream, open_stream, topic_url


def records(stream: EventStream, page: int = 5000) -> Iterator[bytes]:
    position = None
    while True:
        entries = stream.scan(position, page)
        if not entries:
            return
        for e in entries:
            yield e.data
        position = entries[-1].id


def stream_records(url: str) -> tuple[list[bytes], list[bytes]]:
    """(exposure records, event records) of a stream URL."""
    events, exposures = open_stream(url), open_stream(topic_url(url, EXPOSURE_TOPIC))
    try:
        return list(records(exposures)), list(records(events))
    finally:
        events.close()
        exposures.close()


def print_report(report: Report, console: Console) -> None:
    t = Table(title=f"experiment {report.experiment} · {report.days} day(s)")
    for col in ("arm", "units", "exposures", "impressions", "clicks", "CTR", "conversions / unit", "clicks / unit"):
        t.add_column(col, justify="right")
    for a in report.arms:
        t.add_row(a.arm + (" (control)" if a.arm == report.control else ""), f"{a.units:,}", f"{a.exposures:,}",
                  f"{a.impressions:,}", f"{a.clicks:,}", f"{a.ctr:.3%}", f"{a.conversion_rate:.3f}",
                  f"{a.clicks_per_unit:.3f}")
    console.print(t)
    c = Table(title="against control (CUPED-adjusted Welch; 95% intervals)")
    for col in ("arm", "metric", "diff", "95% CI", "relative", "p", "always-valid p", "CUPED var. reduction",
                "sequential"):
        c.add_column(col, justify="right")
    for arm, metrics in report.comparisons.items():
        for m in METRICS:
            r = metrics[m]
            seq = ("crossed" if report.decisions.get(arm) else "not crossed") if m == "clicks_per_unit" else ""
            c.add_row(arm, m, f"{r.diff:+.4f}", f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", f"{r.relative:+.1%}",
                      f"{r.p_value:.3g}", f"{r.always_valid_p:.3g}", f"{r.variance_reduction:.0%}", seq)
    console.print(c)
    srm = report.srm
    console.print(f"sample ratio: units {list(srm.counts)} against expected {[round(e) for e in srm.expected]}: "
                  f"p = {srm.p_value:.3g}{' — MISMATCH' if srm.mismatch else ''}", highlight=False)
    console.print(f"verdict: {report.verdict}", highlight=False)


def to_json(report: Report) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(report), default=float))


def write_markdown(report: Report, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for arm, series in report.daily.items():
        if series:
            d, lift, lo, hi = zip(*series, strict=True)
            ax.plot(d, [x * 100 for x in lift], marker="o", label=arm)
            ax.fill_between(d, [x * 100 for x in lo], [x * 100 for x in hi], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="day", ylabel="lift in clicks per unit (%)", title="cumulative lift against control, 95% CI")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lift.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.0))
    for arm, sizes in report.sizes.items():
        ax.plot(range(1, len(sizes) + 1), sizes, marker="o", label=arm)
    ax.set(xlabel="day", ylabel="units (cumulative)", title="arm sizes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sizes.png", dpi=110)
    plt.close(fig)
    lines = [f"# Experiment `{report.experiment}`", "", f"**Verdict:** {report.verdict}", "",
             "| arm | units | exposures | impressions | clicks | CTR | conversions / unit | clicks / unit |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report.arms:
        name = a.arm + (" (control)" if a.arm == report.control else "")
        lines.append(f"| {name} | {a.units} | {a.exposures} | {a.impressions} | {a.clicks} | {a.ctr:.3%} | "
                     f"{a.conversion_rate:.3f} | {a.clicks_per_unit:.3f} |")
    lines += ["", "| arm | metric | diff | 95% CI | relative | p | always-valid p | CUPED variance reduction |",
              "|---|---|---:|---|---:|---:|---:|---:|"]
    for arm, metrics in report.comparisons.items():
        for m in METRICS:
            r = metrics[m]
            lines.append(f"| {arm} | {m} | {r.diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.relative:+.1%} | "
                         f"{r.p_value:.3g} | {r.always_valid_p:.3g} | {r.variance_reduction:.0%} |")
    srm = report.srm
    lines += ["", f"Sample ratio: {list(srm.counts)} units against expected {[round(e) for e in srm.expected]}, "
                  f"chi-square p = {srm.p_value:.3g}{' (mismatch)' if srm.mismatch else ''}.", "",
              "The decision uses Lan–DeMets O'Brien–Fleming group-sequential bounds over the planned days, so "
              "reading this report every day is safe.", "", "![lift](lift.png)", "", "![sizes](sizes.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
