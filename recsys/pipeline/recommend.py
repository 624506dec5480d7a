"""The Recommend orchestration: user → candidates → item features → features → scores → MMR → top-k."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from recsys.pipeline import stages
from recsys.pipeline.model import ServingModel
from recsys.pipeline.types import (
    CandidateList,
    CandidateSource,
    FeatureSource,
    Recommendation,
    RecommendParams,
    UserView,
)

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    n_candidates: int = 300
    max_history: int = 500            # history fetched per user (most recent)
    recent_history: int = 20          # history items whose features feed category/embedding affinity
    diversity_lambda: float = 0.8     # default MMR λ (1 = no diversification)
    mmr_pool: int = 100


class Timings(dict):
    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] = time.perf_counter() - t0


async def fetch_and_retrieve(features: FeatureSource, candidates: CandidateSource, user_id: str,
                             cfg: PipelineConfig, exclude: list[str], attributes: dict[str, str],
                             include_seen: bool, t: Timings | None = None) -> tuple[UserView, CandidateList]:
    """The first two stages, shared by serving, training and evaluation.

    The whole history is fetched so that every item the user interacted with is excluded; only the most
    recent `max_history` items drive retrieval and features (returned as the user's `history`).
    """
    t = t if t is not None else Timings()
    with t.stage("fetch_user"):
        user = await features.get_user(user_id, 0)
    older = user.history[: -cfg.max_history] if len(user.history) > cfg.max_history else []
    user.history = user.history[-cfg.max_history:]
    # Request attributes only describe users we have never seen; stored ones win otherwise.
    attrs = user.attributes if user.found and user.attributes else attributes
    with t.stage("retrieve"):
        cands = await candidates.retrieve(user_id, user.history, exclude + ([] if include_seen else older),
                                          cfg.n_candidates, attrs, include_seen)
    return user, cands


async def recommend(params: RecommendParams, model: ServingModel, features: FeatureSource,
                    candidates: CandidateSource, cfg: PipelineConfig) -> Recommendation:
    t = Timings()
    user, cands = await fetch_and_retrieve(features, candidates, params.user_id, cfg, params.exclude,
                                           params.attributes, params.include_seen, t)
    recent = user.history[-cfg.recent_history:]
    with t.stage("fetch_items"):
        names, views = await features.get_items(cands.item_ids + recent)
    items, history = views[: len(cands.item_ids)], views[len(cands.item_ids):]
    lam = cfg.diversity_lambda if params.diversity_lambda is None else params.diversity_lambda
    fallback = False
    x = None
    try:
        with t.stage("featurize"):
            cand_emb = model.embeddings.lookup(cands.item_ids)  # shared by the features and MMR
            x = stages.featurize(model, user, cands, names, items, history, cand_emb)
        with t.stage("score"):
            scores = stages.score(model, x)
        with t.stage("diversify"):
            order = stages.diversify(cand_emb, items, scores, params.k, lam, cfg.mmr_pool)
    except Exception:  # a broken model must not take the endpoint down: serve popularity instead
        log.exception("ranker failed for model %s; serving popularity order", model.version)
        fallback = True
        order = stages.popularity_order(cands, params.k)
        scores = np.zeros(len(cands.item_ids))
    contributions = None
    if params.explain and not fallback and x is not None:
        with t.stage("explain"):
            contributions = stages.explain(model, x, order)
    return Recommendation(
        items=stages.build_items(cands, items, scores, order, contributions),
        model_version=model.version, cold_start=not user.history, fallback=fallback,
        diversity_lambda=lam, timings=dict(t))
