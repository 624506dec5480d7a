"""The compiled trees (recsys/ranking/compiled.py) score like LightGBM, and a form that does not is refused."""

import lightgbm as lgb
import numpy as np
import pytest

from recsys.ranking import compiled
from recsys.ranking.model import RankerModel

pytestmark = pytest.mark.skipif(not compiled.available(), reason="lleaves is not installed")


def _booster(seed: int = 0, rounds: int = 60) -> tuple[lgb.Booster, np.ndarray]:
    """A lambdarank model on lists with missing values, like the served features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(scale=0.5, size=len(x)) > 1).astype(float)
    booster = lgb.train({"objective": "lambdarank", "num_leaves": 7, "min_data_in_leaf": 20, "verbose": -1,
                         "num_threads": 1, "seed": seed}, lgb.Dataset(x, y, group=np.full(100, 30)),
                        num_boost_round=rounds)
    held_out = rng.normal(size=(400, 6)).astype(np.float32)
    held_out[rng.random(held_out.shape) < 0.2] = np.nan
    return booster, held_out


def test_compiled_scores_equal_lightgbm_within_1e_6(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_COMPILED_CACHE", str(tmp_path))
    booster, x = _booster()
    trees = compiled.compile_booster(booster)
    assert trees is not None
    for rows in (x, compiled.probe_matrix(booster, seed=7), x[:1]):
        assert np.max(np.abs(trees.predict(rows) - booster.predict(rows, num_threads=1))) <= 1e-6
    assert len(list(tmp_path.glob("*.so"))) == 1  # cached: the next load skips the compiler
    again = compiled.compile_booster(booster)
    np.testing.assert_allclose(again.predict(x), trees.predict(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="6 features"):
        trees.predict(x[:, :5])


def test_a_compiled_form_that_disagrees_is_refused_and_lightgbm_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_COMPILED_CACHE", str(tmp_path))
    booster, x = _booster(seed=1)
    other, _ = _booster(seed=2)
    assert compiled.compile_booster(other) is not None
    # plant the other model's machine code where this model's would be cached
    [planted] = tmp_path.glob("*.so")
    target = tmp_path / f"{compiled._cache_key(booster.model_to_string())}.so"
    planted.rename(target)
    assert compiled.compile_booster(booster) is None
    assert not target.exists()  # the wrong form is dropped, the next load compiles afresh
    model = RankerModel(booster=booster, feature_names=[f"f{i}" for i in range(6)])
    assert model.compile() is True  # compiles again, correctly
    np.testing.assert_allclose(model.score(x), RankerModel(booster=booster, feature_names=model.feature_names)
                               .score(x), rtol=0, atol=1e-6)


def test_ranker_without_trees_never_compiles():
    booster, x = _booster(rounds=3)
    model = RankerModel(booster=booster, feature_names=[f"f{i}" for i in range(6)], base={"f0": 1.0},
                        use_trees=False)
    assert model.compile() is False and model.compiled is None
    np.testing.assert_allclose(model.score(x), np.nan_to_num(x[:, 0].astype(np.float64)))
