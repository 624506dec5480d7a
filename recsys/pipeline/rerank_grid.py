"""The re-rankers over a small grid, measured on prepared candidates, and the issue-12 rule that picks a default.

Shared by `recsys eval --frontier` (recsys/evaluation/frontier.py: reports the trade-off on validation and test)
and `recsys train` (recsys/training/select.py: chooses the bundle's serving default on its validation users), so
the default serving gets is chosen by exactly the frontier the report shows.

For every grid point (MMR λ, calibration λ, category caps, long-tail β) the serving pipeline's own `finalize`
re-ranks the same prepared candidates (one `prepare` per user, so the grid costs little), and the lists are
scored by nDCG@k, intra-list diversity (the similarity MMR uses), category coverage and KL miscalibration
(Steck 2018) against the user's history. The reference is MMR λ = 1, i.e. `pipeline_no_diversity`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import Prepared, finalize, prepare
from recsys.pipeline.types import RecommendParams
from recsys.ranking.metrics import ItemSimilarity, category_coverage, intra_list_diversity, miscalibration, ndcg_at_k

NDCG_TOLERANCE = 0.01      # nDCG@k within 1% of the reference
MISCALIBRATION_DROP = 0.20  # ... and miscalibration at least 20% lower
ILD_GAIN = 0.03            # ... or ILD at least 3% higher
METRICS = ("intra_list_diversity", "category_coverage", "miscalibration")


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

    def defaults(self) -> dict[str, Any]:
        """The pipeline settings that make this point the default (what a bundle's `serving_defaults` hold)."""
        value = int(self.value) if self.param == "category_cap" else float(self.value)
        return {"reranker": self.reranker, self.param: value}


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
    sim = ItemSimilarity(stack.model.embeddings.lookup, cats)
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
                       "intra_list_diversity": intra_list_diversity(recs, sim, k),
                       "category_coverage": float(np.mean([c for c in cov if c is not None] or [np.nan])),
                       "miscalibration": float(np.mean([m for m in mis if m is not None] or [np.nan]))})
    return _marked(points, len(users), k)


def _marked(points: list[dict], n_users: int, k: int) -> dict:
    ref = next((p for p in points if p["label"] == REFERENCE.label), points[0])
    for pt in points:
        pt["meets_bar"] = meets_bar(pt, ref, k)
    return {"n_users": n_users, "reference": REFERENCE.label, "points": points, "best": best_points(points, k)}


def pooled(results: Sequence[dict], k: int) -> dict:
    """Several `measure` results over the same grid (e.g. one per history/label fold) as one, each metric the
    user-weighted mean: the trainer's choice decides on every fold's held-out items, not on one fold's noise."""
    weights = np.array([r["n_users"] for r in results], dtype=np.float64)
    points = []
    for i, first in enumerate(results[0]["points"]):
        pt = {key: first[key] for key in ("reranker", "param", "value", "label")}
        for m in (f"ndcg@{k}", *METRICS):
            vals = np.array([r["points"][i][m] for r in results], dtype=np.float64)
            ok = np.isfinite(vals)
            pt[m] = float(np.average(vals[ok], weights=weights[ok])) if ok.any() else float("nan")
        points.append(pt)
    return _marked(points, int(weights.sum()), k)


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


def strength(pt: dict, ref: dict) -> float:
    """How far a point goes toward the bar's diversity side: the larger of its miscalibration drop over 20% and
    its ILD gain over 3% (1 = exactly at the bar; ≤ 0 = no more diverse or calibrated than the reference)."""
    mis, ild = ref["miscalibration"], ref["intra_list_diversity"]
    drop = 0.0
    if mis and np.isfinite(mis) and np.isfinite(pt["miscalibration"]):
        drop = (mis - pt["miscalibration"]) / mis / MISCALIBRATION_DROP
    gain = (pt["intra_list_diversity"] - ild) / ild / ILD_GAIN if ild else 0.0
    return float(max(drop, gain))


def choose_default(result: dict, k: int) -> tuple[dict, str]:
    """Issue 12's rule on a frontier: among the points meeting the bar, the highest nDCG@k; if none does, the
    strongest point (see `strength`) whose nDCG@k stays within 1% of the reference; else the reference (no
    diversification). Returns the point and why it was chosen."""
    points, key = result["points"], f"ndcg@{k}"
    ref = next(p for p in points if p["label"] == REFERENCE.label)
    ok = [p for p in points if p["meets_bar"]]
    if ok:
        return max(ok, key=lambda p: p[key]), "meets the bar (nDCG within 1%, miscalibration -20% or ILD +3%)"
    near = [p for p in points if p is not ref and p[key] >= (1.0 - NDCG_TOLERANCE) * ref[key] and strength(p, ref) > 0]
    if near:
        return max(near, key=lambda p: strength(p, ref)), "no point meets the bar: the strongest within 1% nDCG"
    return ref, "no point is more diverse within 1% nDCG: no diversification"


def point_of(pt: dict) -> Point:
    return Point(pt["reranker"], pt["param"], float(pt["value"]))
