"""`recsys train`: dataset -> versioned model bundle.

1. Hold out a share of each user's interactions as ranker labels; the rest is the "history".
2. Build stage-1 artifacts (retrieval models, feature tables) on the history only, so no label leaks
   into a feature.
3. Run the real candidate generator for a sample of users and label its candidates: the ranker
   learns on exactly the candidate lists serving will produce.
4. Train LightGBM LambdaRank with early stopping on a user-disjoint validation group.
5. Measure the whole pipeline (candidates -> ranker -> re-ranker) on the validation users' held-out items.
6. Rebuild stage-1 on all data for serving and write the bundle atomically.

Along the way, data-dependent hyperparameters are chosen on the validation users (recsys/training/select.py):
EASE λ and ALS before step 2, source quotas after it, tree settings in step 4, the re-ranker in step 5.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recsys.bundle import BundleMetadata, publish, staging_dir, write_checksums, write_metadata
from recsys.data.schema import Dataset
from recsys.data.split import holdout_by_user
from recsys.feature_tables import FeatureTables
from recsys.pipeline.local import LocalCandidateSource, LocalFeatureSource, prefetched
from recsys.pipeline.model import ItemEmbeddings, ServingModel
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import PipelineConfig, fetch_and_retrieve
from recsys.pipeline.stages import feature_columns
from recsys.ranking.metrics import ndcg_at_k, recall_at_k
from recsys.ranking.model import train_ranker
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.generator import CandidateGenerator, GeneratorConfig
from recsys.storage.embedded import EmbeddedStorage
from recsys.training.config import TrainConfig
from recsys.training.select import Selection, select_quotas, select_reranker, select_trees, stage1_searches
from recsys.training.stage1 import Vocab, build_stage1

log = logging.getLogger(__name__)
# Columns the ranker must not learn from. The ranker learns on features from stage-1 models fit on the
# history part (80% of each user's interactions) but serves with models refit on everything, so features
# whose scale grows with the amount of data (raw counts, raw retrieval scores, absolute times) would shift
# between training and serving; their scale-free versions (relative activity/popularity, per-request
# z-scores and ranks, time differences) are used instead.
# The raw score columns each source declares `relative` are left out the same way (see not_features).
NOT_FEATURES = {
    "n_sources", "history_len",
    "user_n_interactions", "user_n_items", "item_n_interactions", "item_n_users",
    "user_first_ts", "user_last_ts", "user_mean_ts", "item_first_ts", "item_mean_ts",
}


@dataclass
class RankerData:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)


@dataclass
class Fold:
    """One history/label split with its stage-1 models: the unit the ranker's training lists come from."""

    art: RetrievalArtifacts
    tables: FeatureTables
    storage: EmbeddedStorage
    gen: CandidateGenerator
    emb: ItemEmbeddings
    labels: dict[str, set[str]]


def make_fold(ds: Dataset, cfg: TrainConfig, vocab: Vocab, fold: int, item_row: dict[str, int] | None = None) -> Fold:
    """`item_row`: vocab.item_ids' rows, shared by the folds' embeddings (all folds hold the whole catalog)."""
    hist_df, label_df = holdout_by_user(ds.interactions, cfg.label_fraction, cfg.seed + fold)
    hist_ds = Dataset(hist_df.reset_index(drop=True), ds.items, ds.users, f"{ds.name}:history{fold}")
    art, tables, _ = build_stage1(hist_ds, cfg, vocab, content_map=False)
    storage = EmbeddedStorage()
    storage.load(tables)
    gen = CandidateGenerator(art, GeneratorConfig(n=cfg.n_candidates, history_window=PipelineConfig().history_window))
    return Fold(art=art, tables=tables, storage=storage, gen=gen,
                emb=ItemEmbeddings.from_factors(art.item_ids, art.item_factors,
                                                item_row if art.item_ids is vocab.item_ids else None),
                labels={u: set(g) for u, g in label_df.groupby("user_id")["item_id"]})


def build_ranker_lists(users: list[str], labels: dict[str, set[str]], storage: EmbeddedStorage,
                       gen: CandidateGenerator, emb: ItemEmbeddings, pipe: PipelineConfig,
                       progress: Progress | None) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray], list[str]]:
    """Feature columns and labels of the candidate list the generator produces for each user."""
    features, cands_src = LocalFeatureSource(storage), LocalCandidateSource(gen)
    task = progress.add_task("ranker lists", total=len(users)) if progress else None

    async def run():
        cols_out, y_out, kept = [], [], []
        for u in prefetched(storage, gen, users, pipe):
            # exactly the calls the serving pipeline makes, with the same history window
            user, cands = await fetch_and_retrieve(features, cands_src, u, pipe, {}, False)
            names, views = await features.get_items(cands.item_ids + user.history[-pipe.affinity_window:])
            items, hist = views[: len(cands.item_ids)], views[len(cands.item_ids):]
            y = np.array([x in labels[u] for x in cands.item_ids], dtype=np.float32)
            if y.any() and not y.all():
                cols_out.append(feature_columns(emb, user, cands, names, items, hist))
                y_out.append(y)
                kept.append(u)
            if progress is not None:
                progress.advance(task)
        return cols_out, y_out, kept

    return asyncio.run(run())


def _stack(cols: list[dict[str, np.ndarray]], ys: list[np.ndarray], names: list[str]) -> RankerData:
    x = np.concatenate([np.stack([c.get(n, np.full(len(y), np.nan, np.float32)) for n in names], axis=1)
                        for c, y in zip(cols, ys, strict=True)]).astype(np.float32)
    return RankerData(x=x, y=np.concatenate(ys), groups=np.array([len(y) for y in ys]))


def evaluate_users(stack: OfflineStack, labels: dict[str, set[str]], k: int, lam: float | None) -> dict[str, float]:
    recs = stack.recommend_many(list(labels), k, diversity_lambda=lam)
    failed = [u for u, r in recs.items() if r.fallback]
    if failed:  # the pipeline fell back to popularity: these would not be the model's metrics
        raise RuntimeError(f"the ranker failed for {len(failed)} validation users (e.g. {failed[0]}); see the log")
    ndcg = [ndcg_at_k([i.item_id for i in recs[u].items], labels[u], k) for u in labels]
    recall = [recall_at_k([i.item_id for i in recs[u].items], labels[u], k) for u in labels]
    return {f"ndcg@{k}": float(np.mean(ndcg)), f"recall@{k}": float(np.mean(recall))}


def candidate_recall(fold: Fold, users: list[str], pipe: PipelineConfig) -> float:
    """Share of each user's held-out items among the candidates serving would pass to the ranker."""
    features, cands_src = LocalFeatureSource(fold.storage), LocalCandidateSource(fold.gen)

    async def run() -> list[float]:
        out = []
        for u in prefetched(fold.storage, fold.gen, users, pipe):
            _, cands = await fetch_and_retrieve(features, cands_src, u, pipe, {}, False)
            out.append(len(set(cands.item_ids) & fold.labels[u]) / len(fold.labels[u]))
        return out

    return float(np.mean(asyncio.run(run())))


def popularity_ndcg(fold: Fold, users: list[str], k: int = 10) -> float:
    """The most-popular baseline on the same validation users (what the pipeline must clearly beat)."""
    t = fold.tables
    users_per_item = t.item_values[:, t.item_feature_names.index("item_n_users")]  # the popular source's order
    order = t.item_ids[np.argsort(-users_per_item, kind="stable")].tolist()
    out = []
    for u in users:
        seen = set(fold.storage.get_users([u])[0].history)
        top = [x for x in order[: k + len(seen)] if x not in seen][:k]
        out.append(ndcg_at_k(top, fold.labels[u], k))
    return float(np.mean(out))


def train(ds: Dataset, out: Path, cfg: TrainConfig, dataset_spec: str = "", parent: str | None = None,
          show_progress: bool = True, version: str | None = None,
          stream_position: str | None = None, forgotten_through_ms: int = 0) -> BundleMetadata:
    t0 = time.time()
    out = Path(out)
    progress = _progress() if show_progress else None
    timings: dict[str, float] = {}
    with progress or _null():
        steps = progress.add_task("training", total=5) if progress else None

        def step(name: str, started: float) -> float:
            timings[name] = round(time.time() - started, 2)
            if progress is not None:
                progress.advance(steps)
            return time.time()

        t = time.time()
        vocab = Vocab.of(ds)
        sel = Selection()
        tick = _ticker(progress)
        # Validation users come from fold 0's split (the same in every fold, never a training list); the
        # searches that change stage-1 models run on that split before the folds are built with their choice.
        hist0, label0 = holdout_by_user(ds.interactions, cfg.label_fraction, cfg.seed)
        labels0 = {u: set(g) for u, g in label0.groupby("user_id")["item_id"]}
        rng = np.random.default_rng(cfg.seed)
        users = sorted(labels0)
        rng.shuffle(users)
        n_valid = min(max(1, int(len(users) * cfg.valid_fraction)), cfg.max_valid_users)
        valid_users, train_pool = users[:n_valid], users[n_valid:]
        # Which users the per-user pipeline runs cover (their cost is per user, so large data sets sample them)
        user_sample = {"users_with_labels": len(users), "validation_users": n_valid,
                       "validation_share": cfg.valid_fraction, "max_valid_users": cfg.max_valid_users,
                       "validation_sampled": n_valid < max(1, int(len(users) * cfg.valid_fraction))}
        grid = cfg.grid_size(len(ds.interactions))
        cfg = replace(cfg, select_grid=grid)  # the searches read the resolved size (the bundle records it)
        cfg_hist, cfg_full = stage1_searches(len(ds.interactions), hist0, labels0, valid_users, vocab, cfg, sel, tick)
        del hist0, label0  # copies of the interactions: each fold splits its own
        pipe = PipelineConfig(n_candidates=cfg.n_candidates, diversity_lambda=cfg.diversity_lambda)
        item_row = {x: i for i, x in enumerate(vocab.item_ids.tolist())}
        folds = [make_fold(ds, cfg_hist, vocab, f, item_row) for f in range(max(1, cfg.ranker_folds))]
        main = folds[0]
        if cfg.searched("quotas"):
            with sel.timed("quotas"):
                quotas = select_quotas(lambda q, m=main: candidate_recall(m, valid_users,
                                                                          replace(pipe, source_quotas=q)),
                                       cfg, [src.name for src in main.art.sources], sel, tick)
            pipe, cfg_full = replace(pipe, source_quotas=quotas), replace(cfg_full, source_quotas=quotas)
        t = step("stage1_history", t)

        per_fold = max(1, (cfg.max_ranker_users - n_valid) // len(folds))
        user_sample |= {"ranker_users_per_fold": min(per_fold, len(train_pool)), "ranker_pool": len(train_pool),
                        "max_ranker_users": cfg.max_ranker_users}
        train_cols, train_ys = [], []
        for f, fold in enumerate(folds):
            fold_users = [u for u in train_pool if u in fold.labels]
            if len(fold_users) > per_fold:
                fold_users = sorted(np.random.default_rng(cfg.seed + f).choice(fold_users, per_fold, replace=False))
            cols, ys, _ = build_ranker_lists(fold_users, fold.labels, fold.storage, fold.gen, fold.emb, pipe, progress)
            train_cols += cols
            train_ys += ys
        # Validation lists from every fold (same users, different held-out items): 3x the lists, so early
        # stopping and the tree gate below decide on less noise.
        valid_cols, valid_ys = [], []
        for fold in folds:
            cols, ys, _ = build_ranker_lists([u for u in valid_users if u in fold.labels], fold.labels, fold.storage,
                                             fold.gen, fold.emb, pipe, progress)
            valid_cols += cols
            valid_ys += ys
        names = sorted({n for c in train_cols for n in c} - NOT_FEATURES - set(main.gen.relative_score_names))
        tr = _stack(train_cols, train_ys, names)
        va = _stack(valid_cols, valid_ys, names)
        del train_cols, train_ys, valid_cols, valid_ys  # stacked into tr and va
        t = step("ranker_lists", t)

        if cfg.searched("trees"):
            with sel.timed("trees"):
                ranker = select_trees(tr, va, names, cfg.ranker, cfg, sel, tick)
            cfg_full = replace(cfg_full, ranker=replace(cfg.ranker, num_leaves=sel.chosen["ranker.num_leaves"],
                                                        min_data_in_leaf=sel.chosen["ranker.min_data_in_leaf"]))
        else:
            ranker = train_ranker(tr.x, tr.y, tr.groups, va.x, va.y, va.groups, names, cfg.ranker)
        del tr, va  # the validation below runs the whole pipeline: these lists are done with
        t = step("ranker", t)

        # Whole-pipeline validation on held-out items of users the ranker never trained on.
        version = version or BundleMetadata.new_version(time.time())
        stacks = [(OfflineStack(fold.art, fold.tables, ServingModel(version=version, created=time.time(),
                                                                    ranker=ranker, embeddings=fold.emb), pipe,
                                shared=(fold.storage, fold.gen)),
                   {u: fold.labels[u] for u in valid_users if u in fold.labels})
                  for fold in (folds if cfg.searched("reranker") else folds[:1])]
        serving_defaults: dict = {}
        if cfg.searched("reranker"):
            with sel.timed("reranker"):
                for st, truth in stacks:  # measure runs the pipeline per user: batch its retrieval searches
                    st.prefetch(truth)
                serving_defaults, _ = select_reranker([(st, truth, _histories(st, truth)) for st, truth in stacks],
                                                      cfg, sel, tick)
        stack, valid_labels = stacks[0]
        served = stack.with_pipeline(**serving_defaults) if serving_defaults else stack
        metrics = dict(ranker.metrics)
        for key, st, lam in (("valid", served, None if serving_defaults else cfg.diversity_lambda),
                             ("valid_no_diversity", stack.with_pipeline(reranker="mmr"), 1.0)):
            for m, v in evaluate_users(st, valid_labels, 10, lam).items():
                metrics[f"{key}_{m}"] = v
        metrics[f"valid_candidate_recall@{cfg.n_candidates}"] = candidate_recall(main, valid_users, pipe)
        metrics["valid_popularity_ndcg@10"] = popularity_ndcg(main, valid_users)
        metrics["selection_seconds"] = round(sum(sel.seconds.values()), 1)
        t = step("validation", t)

        # The folds' models (each an ANN index and a feature store of the whole catalog) are done with: free
        # them before the serving refit builds its own (the peak memory of a large catalog's training).
        del folds, main, fold, stacks, stack, served, st, item_row
        art, tables, _ = build_stage1(ds, cfg_full, vocab)
        meta = BundleMetadata(
            version=version, created=time.time(), data_fingerprint=ds.fingerprint(), dataset=dataset_spec or ds.name,
            params=cfg_full.to_dict() | {"neighbor_method": getattr(art.source("i2i"), "method", None),
                                         "ranker_features": names, "selection": sel.to_dict(),
                                         "serving_defaults": serving_defaults, "user_sample": user_sample},
            metrics=metrics | (art.content_map.metrics if art.content_map is not None else {})
            | {"train_seconds": round(time.time() - t0, 1)},
            parent=parent, notes=list(ds.notes) + [f"timings: {timings}"], stream_position=stream_position,
            forgotten_through_ms=forgotten_through_ms)
        tmp = staging_dir(out)
        tables.save(tmp / "features")
        art.save(tmp / "retrieval")
        for kind in cfg.ann_indexes:
            art.write_index(tmp / "retrieval", kind)
        ranker.save(tmp / "ranker")
        write_checksums(tmp)
        write_metadata(tmp, meta)
        publish(tmp, out)
        step("serving_stage1", t)
    return meta


def _histories(stack: OfflineStack, users: dict[str, set[str]]) -> dict[str, list[str]]:
    """The users' history items in this stack's feature store (what miscalibration compares a list with)."""
    ids = list(users)
    return {u: list(r.history) if r is not None else [] for u, r in zip(ids, stack.storage.get_users(ids), strict=True)}


def _ticker(progress: Progress | None) -> Callable[[], None]:
    """Advances a "selecting hyperparameters" bar per candidate scored (created on the first one)."""
    task: list = []

    def tick() -> None:
        if progress is None:
            return
        if not task:
            task.append(progress.add_task("selecting hyperparameters", total=None))
        progress.advance(task[0])

    return tick


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
