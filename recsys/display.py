"""Terminal presentation shared by the CLI and the library commands it runs (demo, eval, tune), so that
no library module has to import the CLI: the console, dataset loading with a clean error, and a table of
recommendations."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Wide enough for the recommendation tables when output is piped (CI logs, `make demo | tee`).
console = Console(width=None if sys.stdout.isatty() else 140)


def load_dataset_or_exit(spec: str):
    """The dataset a SPEC names; a bad spec or file prints the error (file, line) and exits with code 2."""
    from recsys.data import DatasetError
    from recsys.data.spec import load_dataset

    try:
        return load_dataset(spec)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from exc


def print_recommendations(resp, title: str) -> None:
    """A RecommendResponse as a table, then the top feature contributions of explained items."""
    table = Table(title=title, caption=f"model {resp.model_version} · λ={resp.diversity_lambda:.2f}"
                  + (" · cold start" if resp.cold_start else "") + (" · FALLBACK" if resp.fallback else ""))
    for col, justify in (("#", "right"), ("item", "left"), ("title", "left"), ("categories", "left"),
                         ("score", "right"), ("sources", "left")):
        table.add_column(col, justify=justify)
    for i, it in enumerate(resp.items, 1):
        table.add_row(str(i), it.item_id, it.title, ", ".join(it.categories), f"{it.score:.3f}", ",".join(it.sources))
    console.print(table)
    for i, it in enumerate(resp.items, 1):
        if it.contributions:
            parts = ", ".join(f"{c.feature}={c.value:.3g} ({c.contribution:+.3f})" for c in it.contributions[:5])
            console.print(f"  {i:>2} {it.item_id}: {parts}")
