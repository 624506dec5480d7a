"""The re-rankers wired into the pipeline: the config and its cache key, request validation, experiment
arms, and the served list at default settings unchanged (over a real bundle's in-process sources)."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from ranker_svc.rerank_request import overrides, problem
from recsys.experiments.config import ConfigError, parse_config
from recsys.pipeline import stages
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import finalize, prepare
from recsys.pipeline.rerank import popularity
from recsys.pipeline.types import RecommendParams
from recsys.ranking.metrics import miscalibration
from recsys.v1 import recommender_pb2 as pb


def test_mmr_cache_keys_are_todays_and_other_rerankers_get_their_own():
    base = PipelineConfig()
    assert base.cache_key() == (base.n_candidates, base.history_window, base.affinity_window, ())
    assert base.override(calibration_lambda=0.1, longtail_beta=0.9).cache_key() == base.cache_key()
    keys = {base.override(reranker=r).cache_key() for r in ("mmr", "calibrated", "category_caps", "longtail")}
    assert len(keys) == 4
    cal = base.override(reranker="calibrated")
    assert cal.override(calibration_lambda=0.9).cache_key() != cal.cache_key()
    assert cal.override(category_cap=7).cache_key() == cal.cache_key()  # only its own parameter counts


@pytest.mark.parametrize(("changes", "field"), [
    ({"reranker": "random"}, "reranker"), ({"calibration_lambda": 1.5}, "calibration_lambda"),
    ({"category_cap": 0}, "category_cap"), ({"longtail_beta": -0.1}, "longtail_beta"),
])
def test_the_config_refuses_bad_values(changes, field):
    with pytest.raises(ValueError, match=field):
        PipelineConfig(**changes)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"reranker": "popularity"}, "reranker must be one of mmr, calibrated, category_caps, longtail"),
    ({"reranker": ""}, "reranker must be one of"),
    ({"calibration_lambda": 1.01}, "calibration_lambda must be in [0, 1]"),
    ({"calibration_lambda": float("nan")}, "calibration_lambda must be in [0, 1]"),
    ({"category_cap": 0}, "category_cap must be >= 1"),
    ({"category_cap": -5}, "category_cap must be >= 1"),
    ({"longtail_beta": 2.0}, "longtail_beta must be in [0, 1]"),
])
def test_request_validation_names_the_field(fields, needle):
    msg = problem(pb.RecommendRequest(user_id="u", k=5, **fields))
    assert msg is not None and needle in msg


def test_request_overrides_carry_only_the_fields_set():
    assert overrides(pb.RecommendRequest(user_id="u", k=5)) == {}
    req = pb.RecommendRequest(user_id="u", k=5, reranker="category_caps", category_cap=2)
    assert problem(req) is None and overrides(req) == {"reranker": "category_caps", "category_cap": 2}


ARMS = """\
layers:
  - name: l
    salt: s
    experiments:
      - name: e
        salt: se
        status: running
        buckets: [0, 10000]
        coverage: 1
        arms:
          - {name: control, weight: 1, control: true, model_version: v1}
          - {name: t, weight: 1, model_version: v1, ARM}
"""


def test_an_arm_takes_a_reranker_and_a_bad_one_is_refused_naming_the_key():
    cfg = parse_config(ARMS.replace("ARM", "reranker: calibrated, calibration_lambda: 0.3"))
    [exp] = cfg.experiments()
    assert exp.arms[1].overrides == {"reranker": "calibrated", "calibration_lambda": 0.3}
    for arm, key in (("reranker: shuffle", "reranker"), ("category_cap: 0", "category_cap"),
                     ("longtail_beta: 3", "longtail_beta"), ("calibration_lambda: -1", "calibration_lambda")):
        with pytest.raises(ConfigError) as err:
            parse_config(ARMS.replace("ARM", arm), "x.yaml")
        assert err.value.key == f"layers[0].experiments[0].arms[1].{key}" and err.value.line == 12


@pytest.fixture(scope="module")
def stack(small_bundle) -> OfflineStack:
    return OfflineStack.from_bundle(small_bundle)


def _prep(stack: OfflineStack, user: str, cfg: PipelineConfig):
    return asyncio.run(prepare(user, stack.model, stack.features, stack.candidates, cfg))


def _users(stack: OfflineStack, n: int = 12) -> list[str]:
    return [f"u{i}" for i in range(1, n + 1)]


def test_default_answers_are_the_mmr_answers_from_before_the_choice(stack):
    """What finalize did before there was a re-ranker setting (MMR over the pool, then the fresh share),
    computed by hand, is what the default and an explicit reranker=mmr return."""
    default = PipelineConfig(n_candidates=80)
    explicit = default.override(reranker="mmr")
    for user in _users(stack):
        prep = _prep(stack, user, default)
        keep = stages.filter_excluded(prep.cands, [])
        before = stages.diversify(prep.cand_emb, prep.items, prep.scores, keep, 10, default.diversity_lambda,
                                  default.mmr_pool)
        before = stages.reserve_fresh(before, prep.cands, keep, 10, default.fresh_share)
        want = [prep.cands.item_ids[i] for i in before]
        params = RecommendParams(user_id=user, k=10)
        assert [i.item_id for i in finalize(prep, params, stack.model, default).items] == want
        assert [i.item_id for i in finalize(_prep(stack, user, explicit), params, stack.model, explicit).items] == want


def test_calibrated_fetches_the_whole_history_but_scores_as_before(stack):
    base = PipelineConfig(n_candidates=80, affinity_window=5)
    a, b = _prep(stack, "u1", base), _prep(stack, "u1", base.override(reranker="calibrated"))
    assert np.array_equal(a.scores, b.scores) and not a.history_categories
    assert len(b.history_categories) == len(b.user.history) > 5


def _lists(stack, cfg, users, k=10):
    out = {}
    for u in users:
        prep = _prep(stack, u, cfg)
        out[u] = (prep, finalize(prep, RecommendParams(user_id=u, k=k, diversity_lambda=1.0), stack.model, cfg))
    return out


def test_each_reranker_does_what_it_says(stack):
    users = _users(stack)
    cfg = PipelineConfig(n_candidates=100, fresh_share=0.0)
    plain = _lists(stack, cfg, users)
    caps = _lists(stack, cfg.override(reranker="category_caps", category_cap=2), users)

    def excess(lists) -> int:  # places over the cap (items with several categories can force a fill)
        return sum(max(0, n - 2) for _, rec in lists.values()
                   for n in Counter(c for it in rec.items for c in set(it.categories)).values())

    assert excess(caps) < excess(plain)
    cal = _lists(stack, cfg.override(reranker="calibrated", calibration_lambda=0.9), users)

    def mis(lists):
        hist = {u: [v.categories for v in asyncio.run(stack.features.get_items(prep.user.history))[1]]
                for u, (prep, _) in lists.items()}
        return np.mean([miscalibration([it.categories for it in rec.items], hist[u])
                        for u, (_, rec) in lists.items()])

    assert mis(cal) < mis(plain)
    tail = _lists(stack, cfg.override(reranker="longtail", longtail_beta=1.0), users)

    def pop(lists):
        vals = []
        for prep, rec in lists.values():
            rows = np.array([prep.cands.item_ids.index(it.item_id) for it in rec.items])
            vals.append(np.nanmean(popularity(prep.items, rows, prep.item_feature_names)))
        return float(np.mean(vals))

    assert pop(tail) < pop(plain)
