"""`recsys eval`: split a dataset by a protocol, train on the training part, and measure the serving
pipeline (through OfflineStack, i.e. the services' own code), its candidate stage and baselines on the
test part, with accuracy and beyond-accuracy metrics side by side.

Systems:
- `pipeline`: candidates → LightGBM ranker → MMR at the serving default λ, exactly `recommend()`;
- `pipeline_no_diversity`: the same call with λ = 1 (pure relevance);
- `retrieval`: the candidate stage alone (`retrieve_list`, as candidate_svc serves it), its list ordered
  by reciprocal-rank fusion of the sources (see `retrieval_order`);
- `popularity`, `ease`, `als`: baselines fitted on the same training split (`baselines.py`);
- `ncf`: NeuMF on the same split, when PyTorch is installed and `ncf_baseline` asks (`ncf_baseline.py`).

Beside the metrics table: AUC per system (`auc.py`), and the fairness and popularity-bias audit
(`audit.py`: `fairness.py`, `popularity.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from threadpoolctl import threadpool_limits

from recsys.data.schema import Dataset
from recsys.data.split import NoTimeError, stratified_split, temporal_split
from recsys.evaluation import audit, audit_report, baselines, beyond
from recsys.evaluation import ncf_baseline as ncf_eval
from recsys.evaluation.auc import N_NEGATIVES, AucSample
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import PipelineConfig, fetch_and_retrieve
from recsys.pipeline.types import CandidateList
from recsys.ranking.metrics import map_at_k, ndcg_at_k, precision_at_k, recall_at_k
from recsys.training.config import TrainConfig
from recsys.training.trainer import train

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)


def split(ds: Dataset, protocol: str, seed: int) -> tuple[Dataset, pd.DataFrame]:
    """(training dataset, test interactions) under a protocol.

    msr: the Microsoft Recommenders MovieLens benchmark's split, stratified random 75/25 per item
    (python_stratified_split(filter_by="item"), as in its benchmark notebook); msr-user: the same
    stratified per user (that function's default); temporal: each user's last 20% of interactions by time.
    """
    if protocol in ("msr", "msr-user"):
        by = "user" if protocol == "msr-user" else "item"
        tr, te = stratified_split(ds.interactions, ratio=0.75, by=by, seed=seed)
    elif protocol == "temporal":
        tr, te = temporal_split(ds.interactions, test_fraction=0.2, name=f"dataset {ds.name!r}")
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return Dataset(tr.reset_index(drop=True), ds.items, ds.users, f"{ds.name}:{protocol}-train"), te


def accuracy(recs: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> dict[str, float]:
    """precision, recall, nDCG and MAP at k, each averaged over all test users (missing lists score 0)."""
    users = list(truth)
    return {
        f"precision@{k}": float(np.mean([precision_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"recall@{k}": float(np.mean([recall_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"ndcg@{k}": float(np.mean([ndcg_at_k(recs.get(u, []), truth[u], k) for u in users])),
        f"map@{k}": float(np.mean([map_at_k(recs.get(u, []), truth[u], k) for u in users])),
    }


def retrieval_order(cands: CandidateList, primary: dict[str, str]) -> np.ndarray:
    """The candidate stage's own ranking of its merged list: reciprocal-rank fusion of the sources.

    The merged list's order is not a ranking (it is quota blocks: all of ALS's share, then item-to-item's,
    ...), so its first k would be ALS alone. Instead each source ranks the candidates it proposed by its
    own score (ALS dot product, item-to-item weight, popularity, segment and content scores), and a
    candidate's retrieval score is Σ 1 / (60 + rank) over the sources that proposed it: items several
    sources agree on come first, then each source's best. Ties keep merged-list order. `primary` maps each
    source to the score column that orders its own list (each source declares it).
    """
    fused = np.zeros(len(cands.item_ids), dtype=np.float64)
    masks = np.asarray(cands.source_masks, dtype=np.int64)
    for bit, s in enumerate(cands.source_vocab):
        col = primary.get(s)
        if col not in cands.score_names:
            continue
        rows = np.flatnonzero(masks >> bit & 1)
        if not len(rows):
            continue
        score = np.nan_to_num(cands.scores[rows, cands.score_names.index(col)].astype(np.float64), nan=-np.inf)
        ranked = rows[np.argsort(-score, kind="stable")]
        fused[ranked] += 1.0 / (RRF_K + np.arange(1, len(ranked) + 1))
    return np.argsort(-fused, kind="stable")


def source_order(cands: CandidateList, column: str) -> np.ndarray:
    """All candidates ordered by one source's score column alone (missing scores last): a diagnostic of how
    much of the ranking each source could carry by itself."""
    col = cands.scores[:, cands.score_names.index(column)].astype(np.float64)
    return np.argsort(-np.nan_to_num(col, nan=-np.inf), kind="stable")


@dataclass
class EvalResult:
    """The JSON summary plus what the report's plots need (the lists themselves and item popularity)."""

    summary: dict
    recs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    item_popularity: dict[str, int] = field(default_factory=dict)  # distinct training users per item


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not show,
    )


def _candidates(stack: OfflineStack, users: list[str], on_user: Callable[[], None]) -> dict[str, CandidateList]:
    """The candidate list serving would pass to the ranker, per user: the same fetch-user and retrieve
    calls, history window and attributes as `recommend()`."""

    async def run() -> dict[str, CandidateList]:
        out = {}
        for u in users:
            _, out[u] = await fetch_and_retrieve(stack.features, stack.candidates, u, stack.pipeline, {}, False)
            on_user()
        return out

    return asyncio.run(run())


def reranker_label(cfg: PipelineConfig) -> str:
    """The default re-ranker and its parameter, e.g. `mmr diversity_lambda=0.8`."""
    param = {"mmr": "diversity_lambda", "calibrated": "calibration_lambda", "category_caps": "category_cap",
             "longtail": "longtail_beta"}[cfg.reranker]
    return f"{cfg.reranker} {param}={getattr(cfg, param):g}"


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 6)


def _rounded(x):
    """Floats of a nested dict/list rounded by `_r` (NaN and inf → None), so the summary is JSON."""
    if isinstance(x, dict):
        return {key: _rounded(v) for key, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return _r(x) if isinstance(x, float) else x


def run(
    ds: Dataset,
    protocol: str,
    k: int = 10,
    seed: int = 42,
    cfg: TrainConfig | None = None,
    *,
    dataset_spec: str = "",
    show_progress: bool = False,
    als_baseline: bool = True,
    fairness_attributes: Sequence[str] | None = None,
    ncf_baseline: bool = False,
    ease_memory_gb: float | None = None,
) -> EvalResult:
    """Split, train a bundle on the training part, then score every system on the test users.

    `seed` drives both the split and training (cfg.seed), as `recsys train --seed` does. Relevant items are
    all of a user's test interactions; every system recommends from the whole catalog (the bundle's items:
    training items plus item metadata) minus the user's training items, and metrics average over test users.
    `ncf_baseline`: also train NeuMF (skipped with a note without PyTorch; `recsys eval` asks for it).
    `fairness_attributes`: users-table columns to audit by (None: gender and age band when present);
    `ease_memory_gb`: dense EASE's memory budget (None: half the available memory; see `baselines.fit_ease`).
    """
    cfg = replace(cfg or TrainConfig(), seed=seed)
    t_start = time.time()
    timings: dict[str, float] = {}
    notes: list[str] = []
    train_ds, test = split(ds, protocol, seed)
    train_df = train_ds.interactions
    truth = {u: set(g) for u, g in test.groupby("user_id")["item_id"]}
    users = sorted(truth)
    if not users:
        raise ValueError(f"protocol {protocol} left no test interactions in {dataset_spec or ds.name}")
    recs: dict[str, dict[str, list[str]]] = {}
    extra: dict[str, dict[str, float]] = {}
    n_cand = cfg.n_candidates
    with tempfile.TemporaryDirectory(prefix="recsys-eval-") as tmp:
        t = time.time()
        meta = train(
            train_ds,
            Path(tmp) / "bundle",
            cfg,
            dataset_spec=f"{dataset_spec or ds.name} ({protocol} train)",
            show_progress=show_progress,
        )
        timings["train"] = time.time() - t
        # serving's pipeline defaults (MMR λ, pool, history window) with the candidate count trained for
        stack = OfflineStack.from_bundle(Path(tmp) / "bundle", PipelineConfig(n_candidates=n_cand))
    lam = stack.pipeline.diversity_lambda
    catalog = stack.generator.art.item_ids.tolist()

    # One BLAS thread: MMR's similarity products are ~100x64 matrices, where OpenBLAS's thread hand-off
    # costs more than the work (measured 5-7x slower per request on 2 busy cores); results are unchanged.
    with _progress(show_progress) as progress, threadpool_limits(1, user_api="blas"):
        # pipeline: the bundle's chosen re-ranker default, as served; pipeline_no_diversity: MMR at λ = 1
        for name, lam_arg, st in (("pipeline", None, stack),
                                  ("pipeline_no_diversity", 1.0, stack.with_pipeline(reranker="mmr"))):
            t = time.time()
            task = progress.add_task(name, total=len(users))
            out = st.recommend_many(users, k, lam_arg, progress=lambda task=task: progress.advance(task))
            recs[name] = {u: [i.item_id for i in r.items] for u, r in out.items()}
            timings[name] = time.time() - t
            fell_back = sum(r.fallback for r in out.values())
            if fell_back:
                notes.append(f"{name}: the ranker failed for {fell_back} users, who got the popularity fallback")

        t = time.time()
        task = progress.add_task("retrieval", total=len(users))
        cands = _candidates(stack, users, lambda: progress.advance(task))
        primary = stack.generator.primary_scores
        recs["retrieval"] = {}
        retrieval_rankings = {}
        cand_recall = []
        for u in users:
            c = cands[u]
            cand_recall.append(len(truth[u] & set(c.item_ids)) / len(truth[u]))
            retrieval_rankings[u] = [c.item_ids[i] for i in retrieval_order(c, primary)]
            recs["retrieval"][u] = retrieval_rankings[u][:k]
        cr = {f"candidate_recall@{n_cand}": float(np.mean(cand_recall))}
        by_source = {}
        for src, col in primary.items():
            if col in cands[users[0]].score_names:  # all lists share the names
                r = {u: [cands[u].item_ids[i] for i in source_order(cands[u], col)[:k]] for u in users}
                by_source[src] = {key: _r(v) for key, v in accuracy(r, truth, k).items() if key.startswith("ndcg")}
        for name in ("pipeline", "pipeline_no_diversity", "retrieval"):
            extra[name] = dict(cr)
        timings["retrieval"] = time.time() - t

        data = baselines.Interactions(train_df, catalog)
        t = time.time()
        recs["popularity"] = baselines.popularity(data, users, k)
        scorers = {"popularity": baselines.popularity_scorer(data)}  # full score functions, for AUC
        timings["popularity"] = time.time() - t
        t = time.time()
        ease_fn, ease_note = baselines.fit_ease(data, cfg.ease_reg, ease_memory_gb)  # None: over the memory budget
        notes.append(ease_note)
        if ease_fn is not None:
            scorers["ease"] = ease_fn
            recs["ease"] = baselines.recommend(data, users, ease_fn, k)
            timings["ease"] = time.time() - t
        if als_baseline:
            t = time.time()
            scorers["als"] = baselines.als_scorer(data, cfg.als)
            recs["als"] = baselines.recommend(data, users, scorers["als"], k)
            timings["als"] = time.time() - t
        ncf = ncf_eval.fit(data, cfg.ncf, seed, progress if show_progress else None, notes) if ncf_baseline else None
        if ncf is not None:  # NeuMF (PyTorch, optional) scores by user row: no `scorers` entry, its AUC below
            recs["ncf"], timings["ncf"] = ncf.recommend(users, k), ncf.train_seconds

        seen = train_df.groupby("user_id")["item_id"].agg(set)
        for name in ("pipeline", "retrieval"):
            n_seen = sum(len(seen.get(u, set()) & set(r)) for u, r in recs[name].items())
            if n_seen:
                notes.append(
                    f"{name} recommended {n_seen} training items (serving must exclude every item a user "
                    "interacted with)"
                )

        t = time.time()
        sample = AucSample.build(catalog, {u: set(v) for u, v in seen.items()}, truth, N_NEGATIVES, seed)
        task = progress.add_task("AUC (ranker scores of all candidates)", total=len(users))
        aucs = audit.system_aucs(sample, recs, stack, retrieval_rankings, data, scorers, lambda: progress.advance(task))
        if ncf is not None:
            aucs["ncf"] = sample.mean_auc(ncf.score_items(sample.items))
        timings["auc"] = time.time() - t

        t = time.time()
        pop = dict(baselines.item_popularity_counts(train_df))
        n_train_users = int(train_df["user_id"].nunique())
        hist_len = train_df.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
        segments = beyond.user_segments({u: int(hist_len.get(u, 0)) for u in users})
        categories = {
            x: (r.categories if r is not None else [])
            for x, r in zip(catalog, stack.storage.get_items(catalog), strict=True)
        }
        sim = beyond.ItemSimilarity(stack.model.embeddings.lookup, categories)
        systems: dict[str, dict[str, float | None]] = {}
        task = progress.add_task("beyond-accuracy metrics", total=len(recs))
        for name, r in recs.items():
            m: dict[str, float] = accuracy(r, truth, k)
            if name in aucs:
                m["auc"] = aucs[name]
            m |= extra.get(name, {})
            m["catalog_coverage"] = beyond.catalog_coverage(r, len(catalog), k)
            m["intra_list_diversity"] = beyond.intra_list_diversity(r, sim, k)
            m["novelty"] = beyond.novelty(r, pop, n_train_users, k)
            m["gini"] = beyond.exposure_gini(r, catalog, k)
            for seg, v in beyond.ndcg_by_segment(r, truth, segments, k).items():
                m[f"ndcg@{k}_{seg}"] = v
            systems[name] = {key: _r(v) for key, v in m.items()}
            progress.advance(task)
        timings["metrics"] = time.time() - t
        t = time.time()
        audited = audit.audit(recs, truth, train_df, ds.users, catalog, pop, k, fairness_attributes)
        timings["audit"] = time.time() - t

    timings["total"] = time.time() - t_start
    seg_info = {
        s: {
            "users": len(us),
            "min_history": int(hist_len.get(us[0], 0)) if us else None,
            "max_history": int(hist_len.get(us[-1], 0)) if us else None,
        }
        for s, us in segments.items()
    }
    summary = {
        "protocol": protocol,
        "k": k,
        "seed": seed,
        "dataset": dataset_spec or ds.name,
        "n_train_interactions": len(train_df),
        "n_test_interactions": len(test),
        "n_test_users": len(users),
        "n_catalog_items": len(catalog),
        "diversity_lambda": lam,
        "reranker": reranker_label(stack.pipeline),
        # what `recsys train` chose on its validation split (recsys/training/select.py)
        "selection": meta.params.get("selection", {}) | {"serving_defaults": meta.params.get("serving_defaults", {})},
        "n_candidates": n_cand,
        "retrieval_order": "reciprocal-rank fusion (k=60) of each source's own ranking of its candidates",
        "retrieval_by_source": by_source,
        "segments": seg_info,
        "notes": notes,
        # what training measured on its own validation split (chosen without the test set)
        "model_validation": {m: _r(v) for m, v in meta.metrics.items()},
        "timings": {s: round(v, 2) for s, v in timings.items()},
        "systems": systems,
        "auc": {"negatives_per_user": N_NEGATIVES, "users": sum(1 for n in sample.n_pos.values() if n)},
        **({"ncf": {"train_seconds": ncf.train_seconds, "epochs": ncf.weights.epochs,
                    "article_ndcg@10": ncf_eval.MSR_NCF_NDCG10}} if ncf is not None else {}),
        **_rounded(audited),
    }
    return EvalResult(summary=summary, recs=recs, item_popularity=pop)


def evaluate(ds: Dataset, protocol: str, k: int = 10, seed: int = 42, cfg: TrainConfig | None = None, **kwargs) -> dict:
    """The JSON summary of `run` (see there), for callers that want only the numbers."""
    return run(ds, protocol, k, seed, cfg, **kwargs).summary


def results_table(summary: dict) -> Table:
    """Metrics as rows, systems as columns (fits a terminal with six systems and a dozen metrics)."""
    systems = summary["systems"]
    metrics = list(dict.fromkeys(m for r in systems.values() for m in r))
    table = Table(title=f"{summary['dataset']} · protocol {summary['protocol']} · k={summary['k']}")
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    for m in metrics:
        table.add_row(m, *("—" if r.get(m) is None else f"{r[m]:.4f}" for r in systems.values()))
    return table


def run_eval(args: argparse.Namespace, console: Console) -> int:
    from recsys.display import load_dataset_or_exit as _load

    with console.status(f"loading {args.dataset}"):
        ds = _load(args.dataset)
    cfg = TrainConfig.from_file(Path(args.config)) if args.config else TrainConfig()
    try:  # fail on an unknown --groups name before minutes of training
        groups = audit.parse_groups(getattr(args, "groups", None), ds.users)
    except ValueError as exc:
        console.print(f"[red]error:[/red] --groups: {escape(str(exc))}", soft_wrap=True)
        return 2
    try:
        kw = {"dataset_spec": args.dataset, "show_progress": True, "fairness_attributes": groups, "ncf_baseline": True,
              "ease_memory_gb": getattr(args, "ease_memory_gb", None)}
        result = run(ds, args.protocol, args.k, args.seed, cfg, **kw)
    except NoTimeError as exc:  # e.g. --protocol temporal on Last.fm, which has no timestamps
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    summary = result.summary
    console.print(results_table(summary))
    for table in audit_report.tables(summary):
        console.print(table)
    for note in summary["notes"]:
        console.print(f"note: {note}")
    if line := ncf_eval.versus_article(summary):
        console.print(line)
    console.print("timings (s): " + ", ".join(f"{s} {v:.1f}" for s, v in summary["timings"].items()))
    if getattr(args, "frontier", False):  # re-rankers over a grid (frontier.py): two more trainings
        from recsys.evaluation import frontier, frontier_report

        with console.status("re-ranking frontier: validation and test splits"):
            summary["frontier"] = frontier.run(ds, args.protocol, args.k, args.seed, split, cfg,
                                                  args.dataset)
        for split_name in ("valid", "test"):
            console.print(frontier_report.table(summary["frontier"], split_name))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
        console.print(f"wrote {args.json}")
    if args.report:
        from recsys.evaluation.report import write_report

        path = write_report(Path(args.report), summary, result.recs, result.item_popularity)
        if summary.get("frontier"):
            from recsys.evaluation import frontier_report

            path.write_text(path.read_text() + "\n" + frontier_report.write(Path(args.report), summary["frontier"]))
        console.print(f"wrote {path}")
    return 0
