"""`recsys eval --report DIR`: a Markdown report with PNG plots of an evaluation run.

Markdown (not HTML) so it renders in code review and on any git host, next to the JSON the run wrote;
plots are static PNGs drawn with matplotlib's Agg backend (no display needed on servers or CI).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recsys.evaluation import audit_report

ACCURACY = ("precision", "recall", "ndcg", "map")
SHARES = ("catalog_coverage", "intra_list_diversity", "gini")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(ax, groups: list[str], systems: dict[str, list[float | None]], ylabel: str) -> None:
    """Bars of each system side by side within each group (None drawn as a gap)."""
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(groups))
    for j, (name, vals) in enumerate(systems.items()):
        v = [np.nan if a is None else a for a in vals]
        ax.bar(x + (j - (len(systems) - 1) / 2) * width, v, width, label=name)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def plot_metrics(summary: dict, path: Path) -> None:
    """Accuracy@k, share-type beyond-accuracy metrics and novelty, one bar per system."""
    plt = _plt()
    k, systems = summary["k"], summary["systems"]
    acc = [f"{m}@{k}" for m in ACCURACY]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [4, 3, 1.4]})
    _grouped_bars(axes[0], acc, {s: [r.get(m) for m in acc] for s, r in systems.items()}, "mean over test users")
    axes[0].set_title("accuracy")
    _grouped_bars(axes[1], list(SHARES), {s: [r.get(m) for m in SHARES] for s, r in systems.items()}, "value")
    axes[1].set_title("coverage, diversity, exposure concentration")
    _grouped_bars(axes[2], ["novelty"], {s: [r.get("novelty")] for s, r in systems.items()}, "bits")
    axes[2].set_title("novelty")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"{summary['dataset']} · {summary['protocol']} · k={k}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_segments(summary: dict, path: Path) -> None:
    """nDCG@k of light, medium and heavy users (tertiles of training-history length) per system."""
    plt = _plt()
    k, systems = summary["k"], summary["systems"]
    segs = list(summary["segments"])
    labels = [
        f"{s}\n({summary['segments'][s]['min_history']}–{summary['segments'][s]['max_history']} items)" for s in segs
    ]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    _grouped_bars(ax, labels, {s: [r.get(f"ndcg@{k}_{g}") for g in segs] for s, r in systems.items()}, f"ndcg@{k}")
    ax.set_title(f"nDCG@{k} by user segment (training-history tertiles)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_popularity(
    recs: Mapping[str, Mapping[str, list[str]]], item_popularity: Mapping[str, int], k: int, path: Path
) -> None:
    """Training popularity (distinct users) of every recommended slot: histogram and CDF per system.

    Items never seen in training are drawn at popularity 1 so they fit the log axis.
    """
    plt = _plt()
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(14, 4.8))
    pops = {
        name: np.array([max(item_popularity.get(i, 0), 1) for items in r.values() for i in items[:k]])
        for name, r in recs.items()
    }
    lo = min((int(p.min()) for p in pops.values() if len(p)), default=1)
    hi = max((int(p.max()) for p in pops.values() if len(p)), default=2)
    bins = np.logspace(np.log10(lo), np.log10(max(hi, lo + 1)), 30)
    for name, p in pops.items():
        if not len(p):
            continue
        ax_h.hist(p, bins=bins, histtype="step", linewidth=1.6, label=name, density=False)
        srt = np.sort(p)
        ax_c.plot(srt, np.arange(1, len(srt) + 1) / len(srt), label=name)
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    for ax in (ax_h, ax_c):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training users who interacted with the recommended item")
        ax.grid(alpha=0.3)
    ax_h.set_ylabel("recommended slots")
    ax_h.set_title("popularity of recommended items")
    ax_c.set_ylabel("share of recommended slots ≤ x")
    ax_c.set_title("CDF (further right = more popular items)")
    ax_c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def markdown(summary: dict) -> str:
    """The report's text: setup, the results table (metrics x systems), segments, notes and plots."""
    k, systems = summary["k"], summary["systems"]
    names = list(systems)
    metrics = list(dict.fromkeys(m for r in systems.values() for m in r))
    lines = [
        f"# Offline evaluation: {summary['dataset']}",
        "",
        f"Protocol **{summary['protocol']}**, k = {k}, seed {summary['seed']}: "
        f"{summary['n_train_interactions']:,} training and {summary['n_test_interactions']:,} test interactions, "
        f"{summary['n_test_users']:,} test users, {summary['n_catalog_items']:,} catalog items. "
        f"Every test interaction is relevant; each system recommends from all items minus the user's training "
        f"items; metrics are averaged over test users.",
        "",
        f"- `pipeline`: the serving path (candidates → LightGBM ranker → "
        f"{summary.get('reranker', 'mmr diversity_lambda=' + str(summary['diversity_lambda']))}, the re-ranker "
        "training chose on validation), "
        "run in-process through the services' own code",
        "- `pipeline_no_diversity`: the same with MMR off (λ = 1)",
        f"- `retrieval`: the candidate stage alone ({summary['n_candidates']} candidates), top-k by "
        f"{summary['retrieval_order']}; `candidate_recall@{summary['n_candidates']}` is the mean share of a "
        "user's test items that reached the ranker",
        "- baselines fitted on the same training split: "
        + ", ".join(f"`{n}`" for n in names if n not in ("pipeline", "pipeline_no_diversity", "retrieval")),
        "",
        "## Results",
        "",
        "| metric | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for m in metrics:
        vals = [systems[n].get(m) for n in names]
        finite = [v for v in vals if v is not None]
        best = max(finite) if finite and m != "gini" else (min(finite) if finite else None)
        cells = [f"**{_fmt(v)}**" if v is not None and v == best and len(finite) > 1 else _fmt(v) for v in vals]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if summary.get("retrieval_by_source"):
        lines += [
            "",
            "Candidate lists ordered by a single source's score (a diagnostic of what each source "
            "carries alone): "
            + ", ".join(f"{s} ndcg@{k} {_fmt(v.get(f'ndcg@{k}'))}" for s, v in summary["retrieval_by_source"].items())
            + ".",
        ]
    lines += [
        "",
        "Best per row in bold (lowest for gini). Definitions: catalog_coverage = distinct recommended items / "
        "catalog items; intra_list_diversity = mean pairwise (1 − similarity) within a list, with the similarity "
        "MMR uses (cosine of ALS item embeddings blended with category Jaccard); novelty = mean "
        "−log2(training users of the item / training users), in bits; gini = Gini coefficient of recommendation "
        "counts over all catalog items (exposure concentration); auc = mean over users of P(a test item ranks above "
        f"one of {summary.get('auc', {}).get('negatives_per_user', 100)} sampled items the user never interacted "
        "with), ties ½, over each system's full ranking "
        "(baselines: all catalog scores; pipeline: its list, then the other candidates by ranker score; retrieval: "
        "its fused candidate order; items a system did not score rank last).",
        "",
        "![metrics per system](metrics.png)",
        "",
        "## By user segment",
        "",
        "| segment | users | training history |",
        "| --- | ---: | --- |",
    ]
    for s, info in summary["segments"].items():
        lines.append(f"| {s} | {info['users']} | {info['min_history']}–{info['max_history']} items |")
    lines += [
        "",
        "![nDCG by segment](segments.png)",
        "",
        "## Popularity of recommended items",
        "",
        "![popularity of recommended items](popularity.png)",
        "",
    ]
    if summary.get("popularity_bias"):
        lines += audit_report.markdown(summary)
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    lines += ["## Timings (s)", "", ", ".join(f"{s} {v}" for s, v in summary["timings"].items()), ""]
    return "\n".join(lines)


def write_report(
    directory: Path, summary: dict, recs: Mapping[str, Mapping[str, list[str]]], item_popularity: Mapping[str, int]
) -> Path:
    """Write report.md, metrics.png, segments.png, popularity.png and, with the audit, long_tail.png and
    fairness.png into directory; returns report.md."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plot_metrics(summary, directory / "metrics.png")
    plot_segments(summary, directory / "segments.png")
    plot_popularity(recs, item_popularity, summary["k"], directory / "popularity.png")
    if summary.get("popularity_bias"):
        audit_report.write_plots(directory, summary, recs, item_popularity)
    path = directory / "report.md"
    path.write_text(markdown(summary))
    return path
