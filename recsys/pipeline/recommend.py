"""The Recommend pipeline, declared as a sequence of small stages (each in recsys/pipeline/stages.py):

    prepare   fetch_user → retrieve → fetch_items → featurize → score
              depends only on the user, the model version and the pipeline config: the cacheable part
    finalize  filter → diversify → select (→ explain)
              depends on the request: its exclusions, diversity λ, k

ranker_svc runs it against the remote services; training and evaluation run it in-process.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from recsys.pipeline import rerank, stages
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.model import ServingModel
from recsys.pipeline.types import (
    CandidateList,
    CandidateSource,
    FeatureSource,
    ItemView,
    Recommendation,
    RecommendParams,
    UserView,
)

log = logging.getLogger(__name__)
PREPARE_STAGES = ("fetch_user", "retrieve", "fetch_items", "featurize", "score")
FINALIZE_STAGES = ("filter", "diversify", "select")

__all__ = ["PipelineConfig", "Prepared", "Timings", "fetch_and_retrieve", "finalize", "prepare", "recommend"]


class Timings(dict):
    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] = time.perf_counter() - t0


@dataclass
class Prepared:
    """Everything about one user and model version that no request parameter changes."""

    user: UserView
    cands: CandidateList
    items: list[ItemView]
    cand_emb: np.ndarray
    x: np.ndarray | None         # the ranker's input matrix (None when the ranker failed)
    scores: np.ndarray
    fallback: bool               # the ranker failed: scores are the popularity order
    item_feature_names: list[str] = field(default_factory=list)  # names of ItemView.values (longtail's popularity)
    history_categories: list[list[str]] = field(default_factory=list)  # the history's, when calibrated needs them


async def fetch_and_retrieve(features: FeatureSource, candidates: CandidateSource, user_id: str,
                             cfg: PipelineConfig, attributes: dict[str, str], include_seen: bool,
                             version: str = "", t: Timings | None = None) -> tuple[UserView, CandidateList]:
    """The first two stages, shared by serving, training and evaluation."""
    t = t if t is not None else Timings()
    with t.stage("fetch_user"):
        user = await stages.fetch_user(features, user_id, version)
    with t.stage("retrieve"):
        cands = await stages.retrieve(candidates, user, cfg, attributes, include_seen, version)
    return user, cands


async def prepare(user_id: str, model: ServingModel, features: FeatureSource, candidates: CandidateSource,
                  cfg: PipelineConfig, attributes: dict[str, str] | None = None, include_seen: bool = False,
                  t: Timings | None = None) -> Prepared:
    t = t if t is not None else Timings()
    user, cands = await fetch_and_retrieve(features, candidates, user_id, cfg, attributes or {}, include_seen,
                                           model.version, t)
    with t.stage("fetch_items"):
        names, items, history = await stages.fetch_items(features, cands, user, cfg, model.version,
                                                         rerank.history_views_needed(user, cfg))
    hist_cats = [h.categories for h in history] if cfg.reranker == "calibrated" else []
    history = history[max(0, len(history) - cfg.affinity_window):]  # the affinity features' window
    try:
        with t.stage("featurize"):
            cand_emb = model.embeddings.lookup(cands.item_ids)  # shared by the features and MMR
            x = stages.featurize(model, user, cands, names, items, history, cand_emb)
        with t.stage("score"):
            scores = stages.score(model, x)
        return Prepared(user, cands, items, cand_emb, x, scores, fallback=False, item_feature_names=names,
                        history_categories=hist_cats)
    except Exception:  # a broken model must not take the endpoint down: serve popularity instead
        log.exception("ranker failed for model %s; serving popularity order", model.version)
        return Prepared(user, cands, items, model.embeddings.lookup(cands.item_ids), None,
                        stages.popularity_scores(cands), fallback=True, item_feature_names=names,
                        history_categories=hist_cats)


def finalize(prep: Prepared, params: RecommendParams, model: ServingModel, cfg: PipelineConfig,
             t: Timings | None = None) -> Recommendation:
    t = t if t is not None else Timings()
    lam = cfg.diversity_lambda if params.diversity_lambda is None else params.diversity_lambda
    with t.stage("filter"):
        keep = stages.filter_excluded(prep.cands, params.exclude)
    with t.stage("diversify"):
        if prep.fallback:
            order = stages.top_k(prep.scores, keep, params.k)
        else:
            order = rerank.diversify(prep, keep, params.k, lam, cfg)
        order = stages.reserve_fresh(order, prep.cands, keep, params.k, cfg.fresh_share)
    contributions = None
    if params.explain and not prep.fallback and prep.x is not None:
        with t.stage("explain"):
            contributions = stages.explain(model, prep.x, order)
    with t.stage("select"):
        scores = np.zeros(len(prep.scores)) if prep.fallback else prep.scores
        ranked = stages.build_items(prep.cands, prep.items, scores, order, contributions)
    return Recommendation(items=ranked, model_version=model.version, cold_start=not prep.user.history,
                          fallback=prep.fallback, diversity_lambda=lam, timings=dict(t))


async def recommend(params: RecommendParams, model: ServingModel, features: FeatureSource,
                    candidates: CandidateSource, cfg: PipelineConfig) -> Recommendation:
    """prepare, then finalize, under one config (the process's, or an arm's override of it)."""
    t = Timings()
    prep = await prepare(params.user_id, model, features, candidates, cfg, params.attributes,
                         params.include_seen, t)
    return finalize(prep, params, model, cfg, t)
