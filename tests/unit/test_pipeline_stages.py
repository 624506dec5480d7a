"""Each pipeline stage on its own, over real in-process sources (a trained bundle's storage and generator)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recsys.pipeline import stages
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import FINALIZE_STAGES, PREPARE_STAGES, Timings, finalize, prepare
from recsys.pipeline.types import CandidateList, RecommendParams


@pytest.fixture(scope="module")
def stack(small_bundle) -> OfflineStack:
    return OfflineStack.from_bundle(small_bundle)


def run(coro):
    return asyncio.run(coro)


def test_fetch_user_returns_the_whole_history(stack):
    user = run(stages.fetch_user(stack.features, "u1"))
    assert user.found and len(user.history) == len(stack.storage.get_users(["u1"])[0].history)


def test_retrieve_trims_to_the_history_window_and_excludes_older_items(stack):
    user = run(stages.fetch_user(stack.features, "u1"))
    full = list(user.history)
    cfg = PipelineConfig(history_window=3, n_candidates=50)
    cands = run(stages.retrieve(stack.candidates, user, cfg, {}, False))
    assert user.history == full[-3:]
    assert not set(full) & set(cands.item_ids)  # older items are excluded even though they do not drive it
    assert len(cands.item_ids) == 50 and cands.relative_score_names


def test_retrieve_passes_the_configs_source_quotas(stack):
    user = run(stages.fetch_user(stack.features, "u1"))
    only_popular = PipelineConfig(n_candidates=20, source_quotas={s: 0.0 for s in stack.generator.source_names}
                                  | {"popular": 1.0})
    cands = run(stages.retrieve(stack.candidates, user, only_popular, {}, False))
    bit = cands.source_vocab.index("popular")
    assert all(int(m) >> bit & 1 for m in cands.source_masks)


def test_fetch_items_splits_candidates_and_recent_history(stack):
    user = run(stages.fetch_user(stack.features, "u1"))
    cfg = PipelineConfig(affinity_window=4, n_candidates=10)
    cands = run(stages.retrieve(stack.candidates, user, cfg, {}, False))
    names, items, history = run(stages.fetch_items(stack.features, cands, user, cfg))
    assert names and [i.item_id for i in items] == cands.item_ids
    assert [h.item_id for h in history] == user.history[-4:]


def _cands(ids: list[str], pop: list[float]) -> CandidateList:
    return CandidateList(item_ids=ids, score_names=["pop_score"], scores=np.array(pop, np.float32)[:, None],
                         source_masks=np.ones(len(ids), np.uint64), source_vocab=["popular"])


def test_filter_excluded_keeps_candidate_order():
    c = _cands(["a", "b", "c", "d"], [1, 2, 3, 4])
    assert stages.filter_excluded(c, []).tolist() == [0, 1, 2, 3]
    assert stages.filter_excluded(c, ["b", "zz"]).tolist() == [0, 2, 3]


def test_top_k_over_kept_rows_and_popularity_fallback_scores():
    c = _cands(["a", "b", "c", "d"], [0.1, 0.9, 0.5, 0.7])
    scores = stages.popularity_scores(c)
    assert stages.top_k(scores, np.array([0, 2, 3]), 2).tolist() == [3, 2]
    no_pop = CandidateList(["a"], ["x"], np.zeros((1, 1), np.float32), np.ones(1, np.uint64), ["s"])
    assert stages.popularity_scores(no_pop).tolist() == [0.0]


def test_diversify_never_returns_a_filtered_row(stack):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = rng.random(30)
    items = run(stack.features.get_items([f"i{i}" for i in range(30)]))[1]
    keep = np.arange(0, 30, 2)
    for lam in (1.0, 0.5):
        order = stages.diversify(emb, items, scores, keep, 5, lam, pool=20)
        assert len(order) == 5 and set(order.tolist()) <= set(keep.tolist())


def test_prepare_then_finalize_is_recommend_and_finalize_applies_the_request(stack):
    cfg = PipelineConfig(n_candidates=60)
    t = Timings()
    prep = run(prepare("u1", stack.model, stack.features, stack.candidates, cfg, t=t))
    a = finalize(prep, RecommendParams(user_id="u1", k=10, diversity_lambda=1.0), stack.model, cfg, t)
    top = [i.item_id for i in a.items]
    b = finalize(prep, RecommendParams(user_id="u1", k=5, diversity_lambda=1.0, exclude=top[:2]), stack.model, cfg)
    assert [i.item_id for i in b.items] == top[2:7]  # the same prepared scores, the request's exclusions and k
    assert set(PREPARE_STAGES) <= set(a.timings) and set(FINALIZE_STAGES) <= set(a.timings)


def test_config_overrides_per_call_and_cache_key():
    base = PipelineConfig()
    arm = base.override(diversity_lambda=0.5, n_candidates=None)
    assert arm.diversity_lambda == 0.5 and arm.n_candidates == base.n_candidates
    assert arm.cache_key() == base.cache_key()  # λ is applied after the cacheable part
    assert base.override(n_candidates=100).cache_key() != base.cache_key()


def test_featurize_gives_the_rankers_columns_and_score_one_value_per_candidate(stack):
    cfg = PipelineConfig(n_candidates=40)
    user = run(stages.fetch_user(stack.features, "u2"))
    cands = run(stages.retrieve(stack.candidates, user, cfg, {}, False))
    names, items, history = run(stages.fetch_items(stack.features, cands, user, cfg))
    emb = stack.model.embeddings.lookup(cands.item_ids)
    x = stages.featurize(stack.model, user, cands, names, items, history, emb)
    assert x.shape == (40, len(stack.model.ranker.feature_names))
    relative = stack.model.ranker.feature_names.index(f"{cands.relative_score_names[0]}_z")
    assert np.isfinite(x[:, relative]).all()  # the source-declared relative columns are filled
    scores = stages.score(stack.model, x)
    assert scores.shape == (40,) and np.isfinite(scores).all()
