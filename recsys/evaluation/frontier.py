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

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import Dataset
from recsys.evaluation import beyond
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import PipelineConfig, Prepared, finalize, prepare
from recsys.pipeline.types import RecommendParams
from recsys.ranking.metrics import category_coverage, miscalibration, ndcg_at_k
from recsys.training.config import TrainConfig
from recsys.training.trainer import train

NDCG_TOLERANCE = 0.01      # nDCG@k within 1% of the reference
MISCALIBRATION_DROP = 0.20  # ... and miscalibration at least 20% lower
ILD_GAIN = 0.03            # ... or ILD at least 3% higher


@dataclass(frozen=True)
class Point:
    reranker: str
    param: str       # the setting the grid varies
    value: float

    def config(self, base: PipelineConfig) -> PipelineConfig:
        return base.override(reranker=self.reranker, **({} if self.reranker == "mmr" else {self.param: self.value}))

    @property
    def label(self) -> str:
        return f"{self.reranker} {self.param}={self.value:g}"


REFERENCE = Point("mmr", "diversity_lambda", 1.0)
GRID: tuple[Point, ...] = (
    REFERENCE,
    *(Point("mmr", "diversity_lambda", v) for v in (0.95, 0.9, 0.8, 0.7, 0.5)),
    *(Point("calibrated", "calibration_lambda", v) for v in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)),
    *(Point("category_caps", "category_cap", v) for v in (5, 4, 3, 2, 1)),
    *(Point("longtail", "longtail_beta", v) for v in (0.05, 0.1, 0.2, 0.3, 0.5)),
)


def _prepare_all(stack: OfflineStack, users: Sequence[str], cfg: PipelineConfig,
                 on_user: Callable[[], None]) -> dict[str, Prepared]:
    async def run() -> dict[str, Prepared]:
        out = {}
        for u in users:
            out[u] = await prepare(u, stack.model, stack.features, stack.candidates, cfg)
            on_user()
        return out

    return asyncio.run(run())


def measure(stack: OfflineStack, truth: dict[str, set[str]], history: dict[str, list[str]], k: int,
            grid: Sequence[Point] = GRID, on_user: Callable[[], None] = lambda: None) -> dict:
    """Every grid point's metrics on these users (`truth`: relevant items; `history`: training items)."""
    users = sorted(truth)
    catalog = stack.generator.art.item_ids.tolist()
    cats = {x: (r.categories if r is not None else []) for x, r in zip(catalog, stack.storage.get_items(catalog),
                                                                        strict=True)}
    sim = beyond.ItemSimilarity(stack.model.embeddings.lookup, cats)
    # calibrated's prepare is a superset of the others' (it also fetches the history's categories)
    prepared = _prepare_all(stack, users, replace(stack.pipeline, reranker="calibrated"), on_user)
    hist_cats = {u: [cats.get(i, []) for i in history.get(u, [])] for u in users}
    points = []
    for p in grid:
        cfg = p.config(stack.pipeline)
        lam = p.value if p.reranker == "mmr" else None
        recs = {u: [i.item_id for i in finalize(prepared[u], RecommendParams(user_id=u, k=k, diversity_lambda=lam),
                                                stack.model, cfg).items] for u in users}
        mis = [miscalibration([cats.get(i, []) for i in recs[u]], hist_cats[u]) for u in users]
        cov = [category_coverage([cats.get(i, []) for i in recs[u]], hist_cats[u]) for u in users]
        points.append({"reranker": p.reranker, "param": p.param, "value": p.value, "label": p.label,
                       f"ndcg@{k}": float(np.mean([ndcg_at_k(recs[u], truth[u], k) for u in users])),
                       "intra_list_diversity": beyond.intra_list_diversity(recs, sim, k),
                       "category_coverage": float(np.mean([c for c in cov if c is not None] or [np.nan])),
                       "miscalibration": float(np.mean([m for m in mis if m is not None] or [np.nan]))})
    ref = points[list(grid).index(REFERENCE)] if REFERENCE in grid else points[0]
    for pt in points:
        pt["meets_bar"] = meets_bar(pt, ref, k)
    return {"n_users": len(users), "reference": REFERENCE.label, "points": points, "best": best_points(points, k)}


def meets_bar(pt: dict, ref: dict, k: int) -> bool:
    """nDCG@k within 1% of the reference, and miscalibration ≥ 20% lower or ILD ≥ 3% higher."""
    key = f"ndcg@{k}"
    if pt[key] < (1.0 - NDCG_TOLERANCE) * ref[key]:
        return False
    less_miscal = pt["miscalibration"] <= (1.0 - MISCALIBRATION_DROP) * ref["miscalibration"]
    more_ild = pt["intra_list_diversity"] >= (1.0 + ILD_GAIN) * ref["intra_list_diversity"]
    return bool(less_miscal or more_ild)


def best_points(points: list[dict], k: int) -> dict[str, str | None]:
    """Per re-ranker, the grid point meeting the bar with the highest nDCG@k (None: no point meets it)."""
    out: dict[str, str | None] = {}
    for name in dict.fromkeys(p["reranker"] for p in points):
        ok = [p for p in points if p["reranker"] == name and p["meets_bar"]]
        out[name] = max(ok, key=lambda p: p[f"ndcg@{k}"])["label"] if ok else None
    return out


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
    return {"protocol": protocol, "k": k, "seed": seed,
            "valid": _frontier_on(sub_ds, valid, k, cfg, f"{spec} ({protocol} train, frontier validation)", on_user),
            "test": _frontier_on(train_ds, test, k, cfg, f"{spec} ({protocol} train, frontier test)", on_user)}
