"""How well items added at run time (no retraining) get recommended: `python -m recsys.evaluation.new_items`.

Protocol: hold out a share of the items entirely (seed), train a bundle on the rest, then upsert the held-out
items into the served candidate generator through `CandidateGenerator.add_items` with their real titles and
categories (and give the feature store and the ranker their records and vectors, as the services do once
wired). For every user who interacted with a held-out item (those items are the relevant ones), run the
serving pipeline in-process (`prepare` → `finalize`, the calls `recommend()` makes, on an OfflineStack) and
measure recall@k of the held-out items in

- `served`: the served top-k, where the new items compete with the whole trained catalog;
- `new_only`: the pipeline's ranking of its candidates, new items only (capped by the candidates it retrieved);
- `new_only_als`: all held-out items ranked by the ALS source's own score (the user's folded-in vector · the
  item's vector): the placement's quality without the candidate budget, over the same items the
  category-popularity baseline ranks.

Placements compared: the bundle's content map; category centroids (what bundles without a map use);
random vectors with the trained items' norm distribution; and category popularity, which ranks the held-out
items by Σ over an item's categories of (share of the user's history in that category × the category's
share of training interactions), without the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from recsys.data.schema import Dataset
from recsys.feature_tables import FeatureTables
from recsys.pipeline.model import ServingModel
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import PipelineConfig, finalize, prepare
from recsys.pipeline.types import RecommendParams
from recsys.ranking.metrics import recall_at_k
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.content_map import CategoryMeans, category_rows
from recsys.retrieval.growth import NewItem
from recsys.training.config import TrainConfig
from recsys.training.trainer import train

# Item features a record created by an upsert knows: no interactions yet. Every other feature is unknown (NaN).
ZERO_ITEM_FEATURES = ("item_n_interactions", "item_n_users", "item_popularity_rel")
PLACEMENTS = ("content_map", "category_centroids", "random")


def _categories(value: object) -> list[str]:
    if isinstance(value, list | tuple | np.ndarray):
        return [str(c) for c in value]
    return [c for c in str(value).split("|") if c] if isinstance(value, str) else []


def hold_out_items(ds: Dataset, fraction: float = 0.1, seed: int = 42
                   ) -> tuple[Dataset, list[NewItem], dict[str, set[str]]]:
    """(the dataset without a random `fraction` of its interacted items, those items as upserts, each user's
    interactions with them). The items vanish from the metadata too: training never sees them."""
    inter = ds.interactions
    ids = np.sort(inter["item_id"].astype(str).unique())
    rng = np.random.default_rng(seed)
    held = set(rng.choice(ids, size=max(1, int(round(fraction * len(ids)))), replace=False).tolist())
    is_held = inter["item_id"].astype(str).isin(held).to_numpy()
    truth = {str(u): set(g) for u, g in inter[is_held].groupby("user_id")["item_id"]}
    known = ds.items.drop_duplicates("item_id") if ds.items is not None else None
    meta = known.set_index(known["item_id"].astype(str)) if known is not None else None
    items = []
    for x in sorted(held):
        row = meta.loc[x] if meta is not None and x in meta.index else None
        title = "" if row is None or pd.isna(row.get("title")) else str(row.get("title"))
        items.append(NewItem(x, title, tuple(_categories(None if row is None else row.get("categories")))))
    kept_items = None if ds.items is None else ds.items[~ds.items["item_id"].astype(str).isin(held)]
    train_ds = Dataset(inter[~is_held].reset_index(drop=True), kept_items, ds.users, f"{ds.name}:items-held-out",
                       list(ds.notes))
    return train_ds, items, truth


def with_new_items(tables: FeatureTables, items: list[NewItem]) -> FeatureTables:
    """The feature tables plus a record per upserted item (title, categories, zero interaction counts),
    standing in for the record feature_svc creates on the same upsert."""
    names = tables.item_feature_names
    values = np.full((len(items), len(names)), np.nan, np.float32)
    for f in ZERO_ITEM_FEATURES:
        if f in names:
            values[:, names.index(f)] = 0.0
    return replace(tables, item_ids=np.concatenate([tables.item_ids, [it.item_id for it in items]]),
                   item_values=np.concatenate([tables.item_values, values]),
                   item_categories=list(tables.item_categories) + [list(it.categories) for it in items],
                   item_titles=list(tables.item_titles) + [it.title for it in items])


def random_vectors(factors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Random directions whose norms are drawn from the trained items' norms."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, factors.shape[1]))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return (d * rng.choice(np.linalg.norm(factors, axis=1), size=n)[:, None]).astype(np.float32)


def category_popularity(train_ds: Dataset, histories: dict[str, list[str]], item_categories: dict[str, list[str]],
                        items: list[NewItem], k: int) -> dict[str, list[str]]:
    """Per user, the top-k held-out items by Σ_c∈item share_u(c) · pop(c): share_u(c) is the share of the user's
    history in category c, pop(c) the share of training interactions on items of c. Ties: overall category
    popularity, then item id."""
    pop: dict[str, float] = {}
    counts = train_ds.interactions["item_id"].astype(str).value_counts()
    for x, n in counts.items():
        for c in item_categories.get(str(x), []):
            pop[c] = pop.get(c, 0.0) + float(n)
    total = max(sum(pop.values()), 1.0)
    ids = [it.item_id for it in items]
    tie = np.array([sum(pop.get(c, 0.0) for c in it.categories) / total for it in items])
    out = {}
    for u, hist in histories.items():
        share: dict[str, float] = {}
        for x in hist:
            for c in item_categories.get(x, []):
                share[c] = share.get(c, 0.0) + 1.0 / max(len(hist), 1)
        score = np.array([sum(share.get(c, 0.0) * pop.get(c, 0.0) / total for c in it.categories) for it in items])
        order = np.lexsort((np.arange(len(items)), -tie, -score))
        out[u] = [ids[i] for i in order[:k]]
    return out


def _serve(stack: OfflineStack, users: list[str], new_ids: list[str], k: int) -> dict[str, dict]:
    """Per user: the served top-k, the pipeline's new items in relevance order, the candidates' ids, and all
    new items ranked by the ALS source's own score (the user's folded-in vector · the item's vector)."""
    gen = stack.generator
    als = gen.source("als")
    new_rows = gen.indices(new_ids)
    new_set = set(new_ids)

    async def run() -> dict[str, dict]:
        out = {}
        for u in users:
            prep = await prepare(u, stack.model, stack.features, stack.candidates, stack.pipeline)
            uvec = als.fold_in.user_vector(gen.indices(prep.user.history))  # the window `retrieve` used
            by_als = new_rows[np.argsort(-(gen.art.item_factors[new_rows] @ uvec), kind="stable")[:k]]
            served = finalize(prep, RecommendParams(user_id=u, k=k), stack.model, stack.pipeline)
            by_relevance = finalize(prep, RecommendParams(user_id=u, k=len(prep.cands.item_ids), diversity_lambda=1.0),
                                    stack.model, stack.pipeline)
            out[u] = {"served": [i.item_id for i in served.items],
                      "new_only": [i.item_id for i in by_relevance.items if i.item_id in new_set][:k],
                      "als_all_new": gen.art.item_ids[by_als].tolist(),
                      "candidates": prep.cands.item_ids, "fallback": served.fallback}
        return out

    with threadpool_limits(1, user_api="blas"):  # MMR's small products: BLAS threads only cost (runner.py)
        return asyncio.run(run())


def _placed_stack(art: RetrievalArtifacts, tables: FeatureTables, model: ServingModel, pipe: PipelineConfig,
                  items: list[NewItem], vectors: np.ndarray | None) -> tuple[OfflineStack, float]:
    """A fresh serving stack with `items` upserted into the candidate generator and the ranker's embeddings
    (the same vectors); returns it and the seconds add_items took."""
    stack = OfflineStack(art, tables, model, pipe)
    t = time.perf_counter()
    idx = stack.generator.add_items(items, vectors)
    took = time.perf_counter() - t
    emb = model.embeddings.with_items([it.item_id for it in items], stack.generator.art.item_factors[idx])
    stack.model = replace(model, embeddings=emb)
    return stack, took


def evaluate_new_items(ds: Dataset, cfg: TrainConfig | None = None, *, fraction: float = 0.1, seed: int = 42,
                       k: int = 50, dataset_spec: str = "") -> dict:
    """The protocol of the module docstring; returns a JSON-able summary with one row per placement."""
    cfg = replace(cfg or TrainConfig(), seed=seed)
    t0 = time.time()
    train_ds, items, truth = hold_out_items(ds, fraction, seed)
    new_ids = {it.item_id for it in items}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="recsys-new-items-") as tmp:
        t = time.time()
        meta = train(train_ds, Path(tmp) / "bundle", cfg, dataset_spec=f"{dataset_spec or ds.name} (items held out)",
                     show_progress=False)
        timings["train"] = time.time() - t
        art = RetrievalArtifacts.load(Path(tmp) / "bundle" / "retrieval")
        base_tables = FeatureTables.load(Path(tmp) / "bundle" / "features")
        model = ServingModel.load(Path(tmp) / "bundle")
    tables = with_new_items(base_tables, items)
    pipe = PipelineConfig(n_candidates=cfg.n_candidates)
    users = sorted(truth)
    trained_factors = art.catalog.item_factors
    variants: dict[str, np.ndarray | None] = {
        "content_map": None,
        "category_centroids": CategoryMeans.of(art.catalog).vectors(
            category_rows([list(it.categories) for it in items], art.catalog.category_names),
            [it.title for it in items]),
        "random": random_vectors(trained_factors, len(items), seed),
    }
    if art.content_map is None:  # a bundle without a map already serves the centroids
        variants.pop("content_map")
    rows: dict[str, dict] = {}
    for name, vectors in variants.items():
        t = time.time()
        stack, add_s = _placed_stack(art, tables, model, pipe, items, vectors)
        res = _serve(stack, users, [it.item_id for it in items], k)
        rows[name] = {
            f"recall@{k}_served": _mean(recall_at_k(res[u]["served"], truth[u], k) for u in users),
            f"recall@{k}_new_only": _mean(recall_at_k(res[u]["new_only"], truth[u], k) for u in users),
            f"recall@{k}_new_only_als": _mean(recall_at_k(res[u]["als_all_new"], truth[u], k) for u in users),
            f"candidate_recall@{cfg.n_candidates}": _mean(len(set(res[u]["candidates"]) & truth[u]) / len(truth[u])
                                                         for u in users),
            f"new_items_per_top{k}": _mean(sum(x in new_ids for x in res[u]["served"]) for u in users),
            "fallback_users": sum(res[u]["fallback"] for u in users),
            "add_items_ms": round(1000 * add_s, 2),
        }
        timings[name] = time.time() - t
    t = time.time()
    cats = {str(x): list(c) for x, c in zip(tables.item_ids.tolist(), tables.item_categories, strict=True)}
    by_user = dict(zip(base_tables.user_ids.tolist(), base_tables.user_history, strict=True))
    hist = {u: list(by_user.get(u, [])) for u in users}
    lists = category_popularity(train_ds, hist, cats, items, k)
    rows["category_popularity"] = {f"recall@{k}_served": None,
                                   f"recall@{k}_new_only": _mean(recall_at_k(lists[u], truth[u], k) for u in users),
                                   f"recall@{k}_new_only_als": None}
    timings["category_popularity"] = time.time() - t
    timings["total"] = time.time() - t0
    return {"dataset": dataset_spec or ds.name, "k": k, "seed": seed, "held_out_items": len(items),
            "held_out_fraction": fraction, "test_users": len(users), "catalog_items": int(art.catalog.n_items),
            "n_candidates": cfg.n_candidates, "content_map": (art.content_map.info if art.content_map else None),
            "model_validation_ndcg@10": meta.metrics.get("valid_ndcg@10"), "placements": rows,
            "timings_s": {s: round(v, 1) for s, v in timings.items()}}


def _mean(values) -> float:
    v = list(values)
    return float(np.mean(v)) if v else 0.0


def results_table(summary: dict) -> str:
    """A plain-text table: placements as rows."""
    rows = summary["placements"]
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    width = max(len(n) for n in rows) + 2
    lines = [f"{summary['dataset']}: {summary['held_out_items']} held-out items, {summary['test_users']} test users, "
             f"k={summary['k']}, seed {summary['seed']}",
             "placement".ljust(width) + "".join(c.rjust(max(len(c), 8) + 2) for c in cols)]
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c)
            text = "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
            cells.append(text.rjust(max(len(c), 8) + 2))
        lines.append(name.ljust(width) + "".join(cells))
    cm = summary.get("content_map") or {}
    if cm:
        lines.append(f"content map: held-out R² {cm.get('heldout_r2')}, cosine {cm.get('heldout_cosine')}, "
                     f"λ {cm.get('lambda')}, title weight {cm.get('title_weight')}, fit on {cm.get('fit_items')} items")
    lines.append("timings (s): " + ", ".join(f"{s} {v}" for s, v in summary["timings_s"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from recsys.data.spec import load_dataset

    p = argparse.ArgumentParser(prog="python -m recsys.evaluation.new_items", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset spec (as `recsys eval --dataset`); ml100k:PATH works too")
    p.add_argument("--config", help="training config file (default: the default TrainConfig)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the items held out")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    spec = "movielens-100k:" + args.data.split(":", 1)[1] if args.data.startswith("ml100k:") else args.data
    cfg = TrainConfig.from_file(Path(args.config)) if args.config else TrainConfig()
    summary = evaluate_new_items(load_dataset(spec), cfg, fraction=args.fraction, seed=args.seed, k=args.k,
                                 dataset_spec=spec)
    print(results_table(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
