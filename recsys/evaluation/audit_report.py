"""The fairness and popularity-bias audit as rich tables (the console), Markdown (the report) and plots.

Reads only the JSON summary (plus the lists for the exposure curves), so a saved summary renders the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rich.table import Table

POP_ROWS = ("arp", "arp_lift", "long_tail_share", "exposure_gini", "catalog_coverage", "short_head_items")
POP_HELP = (
    "arp = mean over users of the mean training popularity (distinct training users) of their top-k items; "
    "arp_lift = arp / training arp (above 1: popularity amplified); long_tail_share = mean share of list "
    "items outside the short head (the most popular items covering 80% of training interactions); "
    "exposure_gini = Gini of recommendation counts over catalog items; catalog_coverage = distinct "
    "recommended items / catalog. The training column gives the same statistics of the test users' "
    "training histories, and the Gini and coverage of training interactions over the catalog."
)


def group_order(groups) -> list[str]:
    """Groups in reading order: numeric bands by their bound ("<25" before "25-34"), then by name."""

    def key(g: str) -> tuple:
        m = re.search(r"\d+", g)
        return (0, int(m.group()) - g.startswith("<"), g) if m else (1, 0, g)

    return sorted(groups, key=key)


def _f(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _group_cols(k: int) -> list[str]:
    return [f"ndcg@{k}", f"recall@{k}", "arp", "long_tail_share"]


def popularity_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(column names, rows) of the popularity-bias table: statistics x (training + systems)."""
    pb = summary.get("popularity_bias", {})
    names = list(pb)
    rows = [[m] + [_f(pb[n].get(m), 0 if m == "short_head_items" else 4) for n in names] for m in POP_ROWS]
    return ["statistic", *names], rows


def fairness_rows(summary: dict, system: str = "pipeline") -> tuple[list[str], list[list[str]]]:
    """(columns, rows): one system's metrics per group of every audited attribute, then max − min and min/max."""
    cols = _group_cols(summary["k"])
    rows = []
    for attr, by_system in summary.get("fairness", {}).items():
        res = by_system.get(system)
        if res is None:
            continue
        for g in group_order(res["groups"]):
            vals = res["groups"][g]
            rows.append([attr, g, str(vals["users"])] + [_f(vals.get(c)) for c in cols])
        rows.append([attr, "gap: max − min", ""] + [_f(res["gap"][c]["difference"]) for c in cols])
        rows.append([attr, "gap: min / max", ""] + [_f(res["gap"][c]["ratio"]) for c in cols])
    return ["attribute", "group", "users", *cols], rows


def gap_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): per attribute and accuracy metric, each system's gap as 'max − min (min / max)'."""
    k = summary["k"]
    fair = summary.get("fairness", {})
    systems = list(next(iter(fair.values()), {}))
    rows = []
    for attr, by_system in fair.items():
        for m in (f"ndcg@{k}", f"recall@{k}"):
            cells = []
            for s in systems:
                g = by_system[s]["gap"][m]
                cells.append(f"{_f(g['difference'])} ({_f(g['ratio'], 2)})")
            rows.append([attr, m] + cells)
    return ["attribute", "metric", *systems], rows


def _table(title: str, cols: list[str], rows: list[list[str]], left: int = 1) -> Table:
    t = Table(title=title)
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i < left else "right")
    for r in rows:
        t.add_row(*r)
    return t


def tables(summary: dict) -> list[Table]:
    """The console's audit tables: popularity bias, the pipeline by group, and every system's group gaps."""
    out = [_table("popularity bias (training = the same statistic of the training data)", *popularity_rows(summary))]
    if summary.get("fairness"):
        out.append(_table("fairness: pipeline by user group (fairlearn MetricFrame)", *fairness_rows(summary), left=2))
        out.append(_table("group gaps per system: max − min (min / max)", *gap_rows(summary), left=2))
    return out


def _md(cols: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    return [
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" if i < left else "---:" for i in range(len(cols))) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown(summary: dict) -> list[str]:
    """The report's "Fairness and popularity bias" section."""
    k = summary["k"]
    lines = ["## Popularity bias", "", *_md(*popularity_rows(summary)), "", POP_HELP, ""]
    lines += ["![popularity bias and long tail](long_tail.png)", ""]
    if summary.get("fairness"):
        lines += [
            "## Fairness by user group",
            "",
            f"Per-user nDCG@{k}, recall@{k}, ARP and long-tail share averaged within each group of "
            + ", ".join(f"`{a}`" for a in summary["fairness"])
            + " (fairlearn `MetricFrame`; users missing from the users table form `unknown`). The gap is the "
            "difference between the best and worst group, and their ratio (1 = parity). Small groups are noisy: "
            "read the users column.",
            "",
            "### pipeline",
            "",
            *_md(*fairness_rows(summary), left=2),
            "",
            "### Group gaps of every system: max − min (min / max)",
            "",
            *_md(*gap_rows(summary), left=2),
            "",
            "![nDCG by user group](fairness.png)",
            "",
        ]
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fairness(summary: dict, path: Path) -> None:
    """nDCG@k per group of each audited attribute, one bar per system."""
    plt = _plt()
    k, fair = summary["k"], summary.get("fairness", {})
    fig, axes = plt.subplots(1, max(1, len(fair)), figsize=(6.5 * max(1, len(fair)), 4.8), squeeze=False)
    for ax, (attr, by_system) in zip(axes[0], fair.items(), strict=False):
        groups = group_order(next(iter(by_system.values()))["groups"])
        width = 0.8 / max(1, len(by_system))
        x = np.arange(len(groups))
        for j, (name, res) in enumerate(by_system.items()):
            v = [res["groups"].get(g, {}).get(f"ndcg@{k}") for g in groups]
            v = [np.nan if a is None else a for a in v]
            ax.bar(x + (j - (len(by_system) - 1) / 2) * width, v, width, label=name)
        users = next(iter(by_system.values()))["groups"]
        ax.set_xticks(x, [f"{g}\n({users[g]['users']})" for g in groups], fontsize=8)
        ax.set_ylabel(f"ndcg@{k}")
        ax.set_title(f"nDCG@{k} by {attr} (users)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lorenz(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.sort(np.asarray(counts, dtype=np.float64))
    total = c.sum() or 1.0
    return np.linspace(0, 1, len(c) + 1), np.concatenate([[0.0], np.cumsum(c) / total])


def plot_long_tail(
    summary: dict, recs: Mapping[str, Mapping[str, list[str]]], item_popularity: Mapping[str, int], path: Path
) -> None:
    """ARP and long-tail share per system against training (dashed), and the Lorenz curves of exposure
    over the catalog (recommendation counts; training interactions for reference)."""
    plt = _plt()
    pb, k, n = summary.get("popularity_bias", {}), summary["k"], summary["n_catalog_items"]
    systems = [s for s in pb if s != "training"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, m, title in (
        (axes[0], "arp", "average recommended popularity"),
        (axes[1], "long_tail_share", "long-tail share"),
    ):
        ax.bar(systems, [np.nan if pb[s].get(m) is None else pb[s][m] for s in systems], color="tab:blue")
        if pb.get("training", {}).get(m) is not None:
            ax.axhline(pb["training"][m], color="black", linestyle="--", label="training")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    train_counts = np.zeros(n)
    vals = list(item_popularity.values())[:n]
    train_counts[: len(vals)] = vals
    ax.plot(
        *_lorenz(train_counts), "k--", label=f"training (Gini {_f(pb.get('training', {}).get('exposure_gini'), 2)})"
    )
    for s in systems:
        counts: dict[str, int] = {}
        for items in recs.get(s, {}).values():
            for i in items[:k]:
                counts[i] = counts.get(i, 0) + 1
        c = np.zeros(max(n, len(counts)))
        c[: len(counts)] = list(counts.values())
        ax.plot(*_lorenz(c), label=f"{s} (Gini {_f(pb[s].get('exposure_gini'), 2)})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set_xlabel("share of catalog items (least exposed first)")
    ax.set_ylabel("share of exposure")
    ax.set_title("exposure concentration (Lorenz)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(
    directory: Path, summary: dict, recs: Mapping[str, Mapping[str, list[str]]], item_popularity: Mapping[str, int]
) -> None:
    plot_long_tail(summary, recs, item_popularity, directory / "long_tail.png")
    if summary.get("fairness"):
        plot_fairness(summary, directory / "fairness.png")
