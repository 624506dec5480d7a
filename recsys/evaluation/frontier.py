"""`recsys eval --frontier`: the accuracy/diversity trade-off of each re-ranker over a small grid.

For every grid point (MMR λ, calibration λ, category caps, long-tail β) the serving pipeline's own
`finalize` re-ranks the same prepared candidates (one `prepare` per user, so the grid costs little), and
the lists are scored by nDCG@k, intra-list diversity (the similarity MMR uses), category coverage (share of
the user's history categories the list shows) and KL miscalibration (Steck 2018) against the user's whole
training history. The reference is MMR λ = 1, i.e. `pipeline_no_diversity`.

It runs twice: on a validation split carved from the training part (the same protocol and seed, applied
again), where a default would be chosen, and on the test split, which only confirms. A point "meets the
bar" (issue 12) when nDCG@k stays within 1% of the reference while miscalibration falls by ≥ 20% or ILD
rises by ≥ 3%.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from recsys.data.schema import Dataset
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import PipelineConfig

# The grid, its measurement and the bar live in recsys/pipeline/rerank_grid.py: `recsys train` picks the
# bundle's re-ranker default with the same code (recsys/training/select.py).
from recsys.pipeline.rerank_grid import (  # noqa: F401  (re-exported: the report and tests use these names)
    GRID,
    ILD_GAIN,
    MISCALIBRATION_DROP,
    NDCG_TOLERANCE,
    REFERENCE,
    Point,
    best_points,
    choose_default,
    measure,
    meets_bar,
)
from recsys.training.config import TrainConfig
from recsys.training.trainer import train


def _frontier_on(train_ds: Dataset, test: pd.DataFrame, k: int, cfg: TrainConfig, spec: str,
                 on_user: Callable[[], None]) -> dict:
    truth = {u: set(g) for u, g in test.groupby("user_id")["item_id"]}
    history = {u: list(g) for u, g in train_ds.interactions.groupby("user_id")["item_id"]}
    with tempfile.TemporaryDirectory(prefix="recsys-frontier-") as tmp:
        train(train_ds, Path(tmp) / "bundle", cfg, dataset_spec=spec, show_progress=False)
        stack = OfflineStack.from_bundle(Path(tmp) / "bundle", PipelineConfig(n_candidates=cfg.n_candidates))
    return measure(stack, truth, history, k, on_user=on_user)


Splitter = Callable[[Dataset, str, int], tuple[Dataset, pd.DataFrame]]


def run(ds: Dataset, protocol: str, k: int, seed: int, split: Splitter, cfg: TrainConfig | None = None,
        dataset_spec: str = "", on_user: Callable[[], None] = lambda: None) -> dict:
    """The frontier on the validation split (training part split again) and on the test split. `split` is
    the runner's (passed in: the runner imports this module, so it cannot import the runner)."""
    cfg = replace(cfg or TrainConfig(), seed=seed)
    train_ds, test = split(ds, protocol, seed)
    sub_ds, valid = split(train_ds, protocol, seed)
    spec = dataset_spec or ds.name
    out = {"protocol": protocol, "k": k, "seed": seed,
           "valid": _frontier_on(sub_ds, valid, k, cfg, f"{spec} ({protocol} train, frontier validation)", on_user),
           "test": _frontier_on(train_ds, test, k, cfg, f"{spec} ({protocol} train, frontier test)", on_user)}
    # Where the default sits: the point `recsys train`'s rule picks on validation, then seen at test.
    chosen, why = choose_default(out["valid"], k)
    out["default"] = {"label": chosen["label"], "why": why}
    return out
