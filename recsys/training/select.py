"""Per-training-set hyperparameter selection inside `recsys train` (issue 12 point 1).

The defaults were chosen on MovieLens 100K; another data set needs other values. Each search scores a few
candidates on the trainer's own validation split (fold 0's held-out items of the validation users, never a
test split), cheapest first, so the whole selection costs minutes, not a tune:

1. ease: EASE's λ (the item-to-item source), grid scaled to the data's mean item count; the source's own
   nDCG@10. λ is chosen on the history part and scaled by data size for the refit (EASE is invariant when
   XᵀX and λ scale together). neighbors: how many weights per item it keeps, at that λ.
2. als: ALS factors × regularization; ALS alone (the source's fold-in user vectors) nDCG@10.
3. quotas: a few source-quota presets; candidate recall@n_candidates (what the ranker can reach).
4. trees: LightGBM tree settings, each with early stopping from one fitted blend; validation list nDCG@10.
5. reranker: the serving default re-ranker, by issue 12's point-2 rule on the re-ranking frontier
   (recsys/pipeline/rerank_grid.py, the code `recsys eval --frontier` reports with) over every fold's
   validation lists.

A search keeps the configured value unless a candidate beats it by a margin (validation noise on a few hundred
users is about that size). Options a config file sets are not searched (TrainConfig.fixed); `select: [...]`
lists the searches that run and `select_grid: small` shrinks every grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.table import Table

from recsys.pipeline import rerank_grid
from recsys.pipeline.offline import OfflineStack
from recsys.ranking.metrics import ndcg_at_k
from recsys.ranking.model import RankerModel, RankerParams, fit_blend, train_ranker
from recsys.retrieval.als import ALSParams, FoldIn, train_als
from recsys.retrieval.item2item import EASE_MAX_ITEMS, ease_weights, item_neighbors, truncated
from recsys.training.config import TrainConfig

K = 10
EASE_REFERENCE_MEAN_COUNT = 44.6  # interactions per item of the data λ = 400 was chosen on (ML-100K, 75% train)
EASE_FACTORS = {"full": (0.25, 0.5, 1.0, 2.0, 4.0), "small": (0.5, 1.0, 2.0)}
ALS_GRID = {"full": ((0.5, 1.0, 2.0), (1.0, 10.0)), "small": ((0.5, 1.0), (1.0,))}  # factors ×, regularization ×
QUOTA_PRESETS: dict[str, dict[str, dict[str, float]]] = {
    "full": {"configured": {}, "i2i+": {"i2i": 0.55, "als": 0.2}, "als+": {"als": 0.5, "i2i": 0.25},
             "seq+": {"seq": 0.2, "i2i": 0.35, "als": 0.3}},
    "small": {"configured": {}, "i2i+": {"i2i": 0.55, "als": 0.2}},
}
# (num_leaves, min_data_in_leaf) besides the configured trees. No 31-leaf setting: on ML-100K such trees gained on
# the validation lists and lost at test (they learn the history folds' models, not the refit's; RankerParams).
TREE_GRID = {"full": ((15, 200), (3, 1000)), "small": ((15, 200),)}
RERANK_GRID = {"full": rerank_grid.GRID,
               "small": tuple(p for p in rerank_grid.GRID if p.label in {
                   "mmr diversity_lambda=1", "mmr diversity_lambda=0.9", "calibrated calibration_lambda=0.1",
                   "calibrated calibration_lambda=0.3", "category_caps category_cap=3", "longtail longtail_beta=0.1"})}
def _grid(cfg: TrainConfig) -> str:
    """The grid size ("auto" is resolved by the trainer from the data size; called directly, it is "full")."""
    return "full" if cfg.select_grid == "auto" else cfg.select_grid


MARGIN = {"ease": 0.0, "neighbors": 0.001, "als": 0.002, "quotas": 0.002, "trees": 0.003}  # gain to switch
NEIGHBOR_GRID = {"full": (100, 200, 400, 1000), "small": (200, 1000)}  # EASE weights kept per item


@dataclass
class Selection:
    """What the searches tried and chose: recorded in the bundle (params.selection) and printed by `recsys train`."""

    trials: list[dict[str, Any]] = field(default_factory=list)  # search, candidate, metric, score, seconds, chosen
    chosen: dict[str, Any] = field(default_factory=dict)        # option -> value
    reasons: dict[str, str] = field(default_factory=dict)       # search -> why (or why it did not run)
    seconds: dict[str, float] = field(default_factory=dict)

    def tried(self, search: str, candidate: str, metric: str, score: float, seconds: float) -> None:
        self.trials.append({"search": search, "candidate": candidate, "metric": metric,
                            "score": round(float(score), 6), "seconds": round(seconds, 2), "chosen": False})

    def pick(self, search: str, candidate: str, values: dict[str, Any], reason: str, configured: str = "") -> None:
        for t in self.trials:
            if t["search"] == search:
                t["chosen"] = t["candidate"] == candidate
                t["configured"] = t["candidate"] == configured
        self.chosen.update(values)
        self.reasons[search] = reason

    @contextmanager
    def timed(self, search: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[search] = round(time.time() - t0, 2)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "reasons": self.reasons, "seconds": self.seconds, "trials": self.trials}


def best(scores: dict[str, float], configured: str, margin: float) -> tuple[str, str]:
    """The best candidate, or the configured one unless another beats it by `margin` (validation noise)."""
    top = max(scores, key=lambda c: scores[c])
    if top == configured or scores[top] - scores[configured] <= margin:
        return configured, "configured value kept" if top != configured else "best on validation"
    return top, f"best on validation, {scores[top] - scores[configured]:+.4f} over the configured value"


SCORE_CHUNK = 1 << 25  # scores held at once by _top_ndcg (256 MB of float64): users per chunk = this / items


def _top_ndcg(scores: np.ndarray | Callable[[np.ndarray], np.ndarray], seen: sp.csr_matrix, labels: list[set[str]],
              item_ids: np.ndarray, chunk: int = SCORE_CHUNK) -> float:
    """Mean nDCG@10 of the top unseen items by score (rows: users, aligned with `labels`). `scores` is the
    users x items matrix, or a function of an array of row numbers giving those rows: the rows are then scored
    in chunks of `chunk` entries (one chunk on small catalogs), never users x catalog at once."""
    n_users = seen.shape[0]
    step = n_users if not callable(scores) else max(1, chunk // max(seen.shape[1], 1))
    out = []
    for lo in range(0, n_users, step):
        rows = np.arange(lo, min(lo + step, n_users))
        part = np.array(scores(rows) if callable(scores) else scores, dtype=np.float64)
        part[seen[rows].nonzero()] = -np.inf
        top = np.argpartition(-part, K, axis=1)[:, :K]
        for r, rel in zip(range(len(rows)), labels[lo:lo + len(rows)], strict=True):
            row = top[r][np.argsort(-part[r, top[r]], kind="stable")]
            out.append(ndcg_at_k(item_ids[row].tolist(), rel, K))
    return float(np.mean(out))


def ease_grid(x_hist: sp.csr_matrix, cfg: TrainConfig) -> list[float]:
    """λ candidates around the configured λ scaled to this data's mean interactions per item."""
    center = cfg.ease_reg * (x_hist.nnz / max(x_hist.shape[1], 1)) / EASE_REFERENCE_MEAN_COUNT
    return [round(center * f, 1) for f in EASE_FACTORS[_grid(cfg)]]


def select_ease(x_hist: sp.csr_matrix, rows: np.ndarray, labels: list[set[str]], item_ids: np.ndarray,
                cfg: TrainConfig, data_scale: float, sel: Selection, tick: Callable[[], None]) -> None:
    """EASE's λ by the item-to-item source's own nDCG@10 (its neighbour table scored over the user's history)."""
    if x_hist.shape[1] > EASE_MAX_ITEMS:  # item_neighbors would fit cosine neighbours: nothing to choose
        sel.reasons["ease"] = f"not searched: {x_hist.shape[1]:,} items use cosine neighbours (λ is not used)"
        return
    grid = ease_grid(x_hist, cfg)
    scores: dict[str, float] = {}
    for lam in grid:
        t0 = time.time()
        table, method = item_neighbors(x_hist, ease_reg=lam, m=cfg.neighbors)
        if method != "ease":
            sel.reasons["ease"] = f"not searched: the catalog uses {method} neighbours (λ is not used)"
            return
        scores[f"{lam:g}"] = _top_ndcg((x_hist[rows] @ table).toarray(), x_hist[rows], labels, item_ids)
        sel.tried("ease", f"{lam:g}", "i2i nDCG@10", scores[f"{lam:g}"], time.time() - t0)
        tick()
    configured = f"{grid[len(grid) // 2]:g}"
    choice, why = best(scores, configured, MARGIN["ease"])
    sel.pick("ease", choice, {"ease_reg_validated": float(choice), "ease_reg": round(float(choice) * data_scale, 1)},
             f"{why}; serving λ = {float(choice):g} × {data_scale:.3f} (data size of the refit)", configured)


def select_neighbors(x_hist: sp.csr_matrix, rows: np.ndarray, labels: list[set[str]], item_ids: np.ndarray,
                     cfg: TrainConfig, lam: float, sel: Selection, tick: Callable[[], None]) -> None:
    """How many EASE weights per item the item-to-item source keeps (its memory and its time per request grow
    with it), by the source's own nDCG@10 at the chosen λ: one EASE fit, truncated per candidate."""
    n = x_hist.shape[1]
    if n > EASE_MAX_ITEMS:
        sel.reasons["neighbors"] = f"not searched: {n:,} items use cosine neighbours (at most 100 kept)"
        return
    t0 = time.time()
    b = ease_weights(x_hist, lam)
    fit_s = time.time() - t0
    scores: dict[str, float] = {}
    for m in sorted({min(m, n - 1) for m in (*NEIGHBOR_GRID[_grid(cfg)], cfg.neighbors)}):
        t0 = time.time()
        scores[str(m)] = _top_ndcg((x_hist[rows] @ truncated(b, m)).toarray(), x_hist[rows], labels, item_ids)
        sel.tried("neighbors", str(m), "i2i nDCG@10", scores[str(m)], time.time() - t0 + fit_s)
        fit_s = 0.0
        tick()
    configured = str(min(cfg.neighbors, n - 1))
    choice, why = best(scores, configured, MARGIN["neighbors"])
    sel.pick("neighbors", choice, {"neighbors": int(choice)}, f"{why} (at λ = {lam:g})", configured)


def select_als(x_hist: sp.csr_matrix, rows: np.ndarray, labels: list[set[str]], item_ids: np.ndarray,
               cfg: TrainConfig, sel: Selection, tick: Callable[[], None]) -> None:
    """ALS factors × regularization by ALS alone (fold-in user vectors, as the als source serves) nDCG@10."""
    free = cfg.searched("als")
    f_mult, r_mult = ALS_GRID[_grid(cfg)]
    factors = sorted({max(4, int(cfg.als.factors * m)) for m in f_mult}) if "als.factors" in free else [cfg.als.factors]
    regs = [cfg.als.regularization * m for m in r_mult] if "als.regularization" in free else [cfg.als.regularization]
    scores: dict[str, float] = {}
    params: dict[str, ALSParams] = {}
    for f in factors:
        for reg in regs:
            t0 = time.time()
            p = replace(cfg.als, factors=f, regularization=reg)
            item_f = train_als(x_hist, p)
            fold_in = FoldIn(item_f, p.regularization, p.alpha)
            users = np.stack([fold_in.user_vector(x_hist[r].indices) for r in rows.tolist()])
            key = f"factors={f} reg={reg:g}"
            params[key] = p
            scores[key] = _top_ndcg(lambda part, u=users, f=item_f: u[part] @ f.T, x_hist[rows], labels, item_ids)
            sel.tried("als", key, "ALS nDCG@10", scores[key], time.time() - t0)
            tick()
    configured = f"factors={cfg.als.factors} reg={cfg.als.regularization:g}"
    configured = configured if configured in scores else next(iter(scores))
    choice, why = best(scores, configured, MARGIN["als"])
    sel.pick("als", choice, {"als.factors": params[choice].factors,
                             "als.regularization": params[choice].regularization}, why, configured)


def quota_presets(cfg: TrainConfig, sources: list[str]) -> dict[str, dict[str, float]]:
    """The presets whose sources this bundle has (configured quotas on top of each)."""
    out = {}
    for name, preset in QUOTA_PRESETS[_grid(cfg)].items():
        if all(s in sources for s in preset):
            out[name] = preset | cfg.source_quotas
    return out


def select_quotas(recall: Callable[[dict[str, float]], float], cfg: TrainConfig, sources: list[str],
                  sel: Selection, tick: Callable[[], None]) -> dict[str, float]:
    """Source quotas by candidate recall@n_candidates on the validation users; returns the chosen overrides."""
    presets = quota_presets(cfg, sources)
    scores: dict[str, float] = {}
    for name, quotas in presets.items():
        t0 = time.time()
        scores[name] = recall(quotas)
        sel.tried("quotas", name, f"candidate recall@{cfg.n_candidates}", scores[name], time.time() - t0)
        tick()
    choice, why = best(scores, "configured", MARGIN["quotas"])
    sel.pick("quotas", choice, {"source_quotas": presets[choice]}, why, "configured")
    return presets[choice]


def select_trees(tr: Any, va: Any, names: list[str], params: RankerParams, cfg: TrainConfig, sel: Selection,
                 tick: Callable[[], None]) -> RankerModel:
    """LightGBM tree settings (each with early stopping, from one fitted blend) by validation list nDCG@10, the
    tree gate included (a model whose trees were dropped scores as its base)."""
    t0 = time.time()
    base = fit_blend(tr.x, tr.y, tr.groups, names, params)
    blend_s = time.time() - t0
    settings = [(params.num_leaves, params.min_data_in_leaf)] + [s for s in TREE_GRID[_grid(cfg)]
                                                                 if s != (params.num_leaves, params.min_data_in_leaf)]
    models: dict[str, RankerModel] = {}
    scores: dict[str, float] = {}
    for leaves, min_data in settings:
        t0 = time.time()
        p = replace(params, num_leaves=leaves, min_data_in_leaf=min_data)
        m = train_ranker(tr.x, tr.y, tr.groups, va.x, va.y, va.groups, names, p, base=base)
        key = f"leaves={leaves} min_data={min_data}"
        models[key] = m
        scores[key] = m.metrics["ranker_valid_list_ndcg@10" if m.use_trees else "ranker_valid_base_only_ndcg@10"]
        sel.tried("trees", key, "validation list nDCG@10", scores[key], time.time() - t0 + blend_s)
        blend_s = 0.0  # the blend is fit once, counted with the first setting
        tick()
    configured = f"leaves={params.num_leaves} min_data={params.min_data_in_leaf}"
    choice, why = best(scores, configured, MARGIN["trees"])
    chosen = models[choice]
    sel.pick("trees", choice, {"ranker.num_leaves": int(choice.split()[0].split("=")[1]),
                               "ranker.min_data_in_leaf": int(choice.split()[1].split("=")[1])}, why, configured)
    return chosen


def select_reranker(stacks: list[tuple[OfflineStack, dict[str, set[str]], dict[str, list[str]]]], cfg: TrainConfig,
                    sel: Selection, tick: Callable[[], None]) -> tuple[dict[str, Any], dict]:
    """The serving default re-ranker by issue 12's rule on the validation frontier, pooled over the folds.
    Returns (the pipeline settings to serve with, the pooled frontier)."""
    grid = RERANK_GRID[_grid(cfg)]
    results = []
    for stack, truth, history in stacks:
        t0 = time.time()
        results.append(rerank_grid.measure(stack, truth, history, K, grid=grid))
        tick()
        sel.seconds.setdefault("reranker_folds", 0.0)
        sel.seconds["reranker_folds"] = round(sel.seconds["reranker_folds"] + time.time() - t0, 2)
    frontier = rerank_grid.pooled(results, K)
    spent = sel.seconds.pop("reranker_folds", 0.0) / max(len(grid), 1)
    for pt in frontier["points"]:
        sel.tried("reranker", pt["label"], "nDCG@10 | ILD | miscalibration", pt[f"ndcg@{K}"], spent)
        sel.trials[-1].update({"ild": round(pt["intra_list_diversity"], 6),
                               "miscalibration": round(pt["miscalibration"], 6)
                               if np.isfinite(pt["miscalibration"]) else None, "meets_bar": pt["meets_bar"]})
    chosen, why = rerank_grid.choose_default(frontier, K)
    defaults = rerank_grid.point_of(chosen).defaults()
    sel.pick("reranker", chosen["label"], {"serving_defaults": defaults}, why, rerank_grid.REFERENCE.label)
    return defaults, frontier


def table(selection: dict[str, Any]) -> Table:
    """One row per search as `recsys train` prints it: the chosen candidate and its validation score, the
    configured value's, how many candidates were scored and the time (the full table is in the bundle)."""
    t = Table(title="hyperparameters chosen on the validation split (params.selection)")
    for col in ("search", "chosen", "metric", "chosen score", "configured score", "tried", "s", "why"):
        t.add_column(col, justify="right" if col in ("chosen score", "configured score", "tried", "s") else "left")
    for search, why in selection.get("reasons", {}).items():
        trials = [tr for tr in selection.get("trials", []) if tr["search"] == search]
        chosen = next((tr for tr in trials if tr["chosen"]), None)
        base = next((tr for tr in trials if tr.get("configured")), None)
        t.add_row(search, chosen["candidate"] if chosen else "-", trials[0]["metric"] if trials else "",
                  f"{chosen['score']:.4f}" if chosen else "", f"{base['score']:.4f}" if base else "",
                  str(len(trials)), f"{selection.get('seconds', {}).get(search, 0.0):.1f}", why)
    return t


def stage1_searches(ds_size: int, hist_df: Any, labels: dict[str, set[str]], valid_users: list[str], vocab: Any,
                    cfg: TrainConfig, sel: Selection, tick: Callable[[], None]) -> tuple[TrainConfig, TrainConfig]:
    """EASE λ and ALS on fold 0's history (before the folds are built with them). Returns the config for the
    history folds and the one for the serving refit (EASE's λ scaled by the refit's data size)."""
    from recsys.training.stage1 import user_item_matrix  # stage1 imports the config module, not this one

    cfg_hist, cfg_full = cfg, cfg
    if not (cfg.searched("ease") or cfg.searched("neighbors") or cfg.searched("als")):
        return cfg_hist, cfg_full
    x_hist = user_item_matrix(hist_df, vocab)
    row_of = {u: i for i, u in enumerate(vocab.user_ids.tolist())}
    users = [u for u in valid_users if x_hist[row_of[u]].nnz > 0]
    rows = np.array([row_of[u] for u in users], dtype=np.int64)
    rel = [labels[u] for u in users]
    data_scale = ds_size / max(len(hist_df), 1)  # the refit's data over the history part's (EASE λ scales with it)
    if cfg.searched("ease"):
        with sel.timed("ease"):
            select_ease(x_hist, rows, rel, vocab.item_ids, cfg, data_scale, sel, tick)
        if "ease_reg" in sel.chosen:
            cfg_hist = replace(cfg_hist, ease_reg=sel.chosen["ease_reg_validated"])
            cfg_full = replace(cfg_full, ease_reg=sel.chosen["ease_reg"])
    if cfg.searched("neighbors"):
        with sel.timed("neighbors"):  # at the λ the history part is served with (chosen, or the configured one)
            select_neighbors(x_hist, rows, rel, vocab.item_ids, cfg,
                             sel.chosen.get("ease_reg_validated", cfg.ease_reg / data_scale),
                             sel, tick)
        if "neighbors" in sel.chosen:
            cfg_hist = replace(cfg_hist, neighbors=sel.chosen["neighbors"])
            cfg_full = replace(cfg_full, neighbors=sel.chosen["neighbors"])
    if cfg.searched("als"):
        with sel.timed("als"):
            select_als(x_hist, rows, rel, vocab.item_ids, cfg, sel, tick)
        als = replace(cfg.als, factors=sel.chosen["als.factors"], regularization=sel.chosen["als.regularization"])
        cfg_hist, cfg_full = replace(cfg_hist, als=als), replace(cfg_full, als=als)
    return cfg_hist, cfg_full
