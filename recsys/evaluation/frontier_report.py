"""The re-ranking frontier (recsys/evaluation/frontier.py) as a terminal table, a Markdown section and a plot:
nDCG@k against ILD and against miscalibration, one line per re-ranker, the reference and the bar marked."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

METRICS = ("intra_list_diversity", "category_coverage", "miscalibration")


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def _rel(v: float | None, ref: float | None) -> str:
    return "—" if v is None or not ref else f"{100.0 * (v / ref - 1.0):+.1f}%"


def table(frontier: dict, split: str) -> Table:
    part, k = frontier[split], frontier["k"]
    ref = next(p for p in part["points"] if p["label"] == part["reference"])
    t = Table(title=f"re-ranking frontier · {split} split · {part['n_users']} users · reference {part['reference']}")
    for col in ("point", f"ndcg@{k}", "Δ", "ILD", "Δ", "cat. coverage", "miscal.", "Δ", "bar"):
        t.add_column(col, justify="left" if col == "point" else "right")
    for p in part["points"]:
        t.add_row(p["label"], _f(p[f"ndcg@{k}"]), _rel(p[f"ndcg@{k}"], ref[f"ndcg@{k}"]),
                  _f(p["intra_list_diversity"]), _rel(p["intra_list_diversity"], ref["intra_list_diversity"]),
                  _f(p["category_coverage"]), _f(p["miscalibration"]),
                  _rel(p["miscalibration"], ref["miscalibration"]), "✓" if p["meets_bar"] else "")
    return t


def markdown(frontier: dict, plot_name: str = "frontier.png") -> str:
    k = frontier["k"]
    default = frontier.get("default", {}).get("label")
    lines = ["## Re-ranking frontier", "",
             "Each re-ranker over a grid, on the same prepared candidates (`recsys/evaluation/frontier.py`). "
             f"Reference: {frontier['valid']['reference']} (= `pipeline_no_diversity`). ✓ = within 1% of its "
             f"nDCG@{k} with miscalibration ≥ 20% lower or ILD ≥ 3% higher (issue 12). The validation split is "
             "the training part split again by the same protocol and seed (a default is chosen there); the test "
             "split only confirms. Category coverage = share of the user's history categories the list shows; "
             "miscalibration = KL(history ‖ list) with α = 0.01 (Steck 2018).", ""]
    for split in ("valid", "test"):
        part = frontier[split]
        ref = next(p for p in part["points"] if p["label"] == part["reference"])
        lines += [f"### {split} ({part['n_users']} users)", "",
                  f"| point | ndcg@{k} | Δ | ILD | Δ | category coverage | miscalibration | Δ | bar |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
        for p in part["points"]:
            lines.append(f"| {p['label']} | {_f(p[f'ndcg@{k}'])} | {_rel(p[f'ndcg@{k}'], ref[f'ndcg@{k}'])} | "
                         f"{_f(p['intra_list_diversity'])} | "
                         f"{_rel(p['intra_list_diversity'], ref['intra_list_diversity'])} | "
                         f"{_f(p['category_coverage'])} | {_f(p['miscalibration'])} | "
                         f"{_rel(p['miscalibration'], ref['miscalibration'])} | {'✓' if p['meets_bar'] else ''}"
                         f"{' ◀ default' if p['label'] == default else ''} |")
        best = ", ".join(f"{r}: {b or 'none'}" for r, b in part["best"].items())
        lines += ["", f"Best point meeting the bar per re-ranker: {best}.", ""]
        if default and split == "valid":
            lines += [f"Default (◀), chosen on validation by `recsys train`'s rule: {default}, "
                      f"{frontier['default']['why']}.", ""]
    lines += [f"![re-ranking frontier]({plot_name})", ""]
    return "\n".join(lines)


def plot(frontier: dict, path: Path) -> None:
    """nDCG@k against ILD and against miscalibration, per split, with the bar drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = frontier["k"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for row, split in enumerate(("valid", "test")):
        part = frontier[split]
        ref = next(p for p in part["points"] if p["label"] == part["reference"])
        for col, metric in enumerate(("intra_list_diversity", "miscalibration")):
            ax = axes[row][col]
            for name in dict.fromkeys(p["reranker"] for p in part["points"]):
                pts = [p for p in part["points"] if p["reranker"] == name]
                ax.plot([p[metric] for p in pts], [p[f"ndcg@{k}"] for p in pts], marker="o", label=name)
                for p in pts:
                    ax.annotate(f"{p['value']:g}", (p[metric], p[f"ndcg@{k}"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
            chosen = [p for p in part["points"] if p["label"] == frontier.get("default", {}).get("label")]
            if chosen:
                ax.scatter([chosen[0][metric]], [chosen[0][f"ndcg@{k}"]], marker="*", s=220, color="black",
                           zorder=5, label=f"default ({chosen[0]['label']})")
            ax.axhline(0.99 * ref[f"ndcg@{k}"], color="grey", ls="--", lw=0.8, label="−1% nDCG")
            bar = (0.8 if metric == "miscalibration" else 1.03) * ref[metric]
            ax.axvline(bar, color="grey", ls=":", lw=0.8, label="−20% miscal." if col else "+3% ILD")
            ax.set_xlabel(metric)
            ax.set_ylabel(f"ndcg@{k}")
            ax.set_title(f"{split}: nDCG@{k} vs {metric}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(directory: Path, frontier: dict) -> str:
    """Write frontier.png into directory; returns the Markdown section to append to the report."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plot(frontier, directory / "frontier.png")
    return markdown(frontier)
