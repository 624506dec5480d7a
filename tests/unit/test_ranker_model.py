"""The ranker's linear base (fitted blend), the tree gate and persistence, on small generated lists."""

import json

import lightgbm as lgb
import numpy as np
import pytest

from recsys.ranking.model import RankerModel, RankerParams, base_scores, fit_blend, groups_ndcg

NAMES = ["main_z", "helper_z", "noise"]


def _lists(n_lists=300, n=30, seed=0):
    """Relevance depends on main and helper; noise is independent of it."""
    rng = np.random.default_rng(seed)
    main, helper, noise = rng.normal(size=(3, n_lists * n))
    y = (main + 0.6 * helper + rng.normal(scale=0.5, size=n_lists * n) > 1.5).astype(np.float32)
    return np.stack([main, helper, noise], axis=1).astype(np.float32), y, np.full(n_lists, n)


def test_groups_ndcg_hand_computed():
    y = np.array([0, 1, 1, 0], np.float32)
    scores = np.array([3.0, 2.0, 1.0, 0.0])  # first list ranks the positive 2nd; second list 1st
    assert groups_ndcg(scores, y, np.array([2, 2]), k=2) == pytest.approx(((1 / np.log2(3)) + 1.0) / 2)


def test_fit_blend_weights_informative_features_only():
    x, y, g = _lists()
    params = RankerParams(base_feature="main_z", blend_features=["helper_z", "noise"])
    w = fit_blend(x, y, g, NAMES, params)
    assert w["main_z"] == 1.0 and w["helper_z"] > 0
    assert "noise" not in w
    assert groups_ndcg(base_scores(x, NAMES, w), y, g) > groups_ndcg(x[:, 0], y, g)


def test_base_ignores_missing_features_and_nans():
    x = np.array([[1.0, np.nan, 5.0]], np.float32)
    assert base_scores(x, NAMES, {"main_z": 2.0, "helper_z": 1.0, "absent": 3.0})[0] == pytest.approx(2.0)


def test_gated_model_scores_its_base_and_round_trips(tmp_path):
    x, y, g = _lists(50)
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x, y, group=g), num_boost_round=3)
    model = RankerModel(booster=booster, feature_names=NAMES, base={"main_z": 1.0, "helper_z": 0.3}, use_trees=False)
    np.testing.assert_allclose(model.score(x), x[:, 0] + 0.3 * x[:, 1].astype(np.float64), atol=1e-6)
    contrib = model.explain(x[:4])
    np.testing.assert_allclose(contrib.sum(axis=1), model.score(x[:4]), rtol=1e-6)
    model.save(tmp_path)
    loaded = RankerModel.load(tmp_path)
    assert loaded.base == model.base and loaded.use_trees is False
    np.testing.assert_allclose(loaded.score(x), model.score(x))


def test_loads_bundles_written_before_blended_bases(tmp_path):
    x, y, g = _lists(20)
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x, y, group=g), num_boost_round=2)
    RankerModel(booster=booster, feature_names=NAMES).save(tmp_path)
    meta = json.loads((tmp_path / "ranker.json").read_text())
    del meta["base"], meta["use_trees"]
    meta |= {"base_feature": "main_z", "base_weight": 1.0}
    (tmp_path / "ranker.json").write_text(json.dumps(meta))
    loaded = RankerModel.load(tmp_path)
    assert loaded.base == {"main_z": 1.0} and loaded.use_trees


def test_new_user_requests_fall_back_to_segment_then_popularity():
    names = ["i2i_score_z", "segment_score_z", "pop_score"]
    x, y, g = _lists(20)
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1},
                        lgb.Dataset(x, y, group=g), num_boost_round=2)
    model = RankerModel(booster=booster, feature_names=names, base={"i2i_score_z": 1.0}, use_trees=False)
    cold = np.array([[0.0, 0.5, 0.2], [0.0, 1.5, 0.1], [0.0, 0.5, 0.9], [0.0, np.nan, 1.0]], np.float32)
    assert np.argsort(-model.score(cold)).tolist() == [1, 2, 0, 3]
    np.testing.assert_allclose(model.explain(cold).sum(axis=1), model.score(cold), rtol=1e-6)
    warm = cold.copy()
    warm[:, 0] = [3.0, 0.0, 1.0, 2.0]  # a history-driven score varies: the fitted base alone decides
    assert np.argsort(-model.score(warm)).tolist() == [0, 3, 2, 1]


def test_the_popularity_objective_orders_by_popularity_and_round_trips_without_trees(tmp_path):
    from recsys.ranking.model import train_ranker

    names = ["main_z", "item_popularity_rel"]
    x, y, g = _lists()
    x = np.stack([x[:, 0], np.abs(x[:, 2])], axis=1)
    m = train_ranker(x, y, g, x, y, g, names, RankerParams(objective="popularity"))
    assert m.booster is None and not m.use_trees
    np.testing.assert_allclose(m.score(x[:30]), x[:30, 1])
    m.save(tmp_path)
    assert not (tmp_path / "model.txt").exists()
    back = RankerModel.load(tmp_path)
    assert back.booster is None and np.allclose(back.score(x[:30]), x[:30, 1])
    assert np.allclose(back.explain(x[:3]).sum(axis=1), x[:3, 1])
