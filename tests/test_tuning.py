"""`recsys tune`: the validation split, config handling, and real Ray Tune runs on a tiny dataset."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from recsys.data.spec import load_dataset
from recsys.training.config import SEARCHED, TrainConfig

pytest.importorskip("ray.tune", reason="Ray Tune not installed (the `tune` extra)")
from recsys.tuning import flatten, run_tune, start_point, trial_config, tuned_keys, validation_split  # noqa: E402

SPEC = "synthetic:users=200,items=300,interactions=6000,seed=1"


def tiny_config() -> TrainConfig:
    """Seconds per trial: small models, few ranker users. Its choice-valued parameters lie outside the
    search space's choices, so any sampled trial differs from it on every tuned key."""
    from recsys.ranking.model import RankerParams
    from recsys.retrieval.als import ALSParams

    return TrainConfig(als=ALSParams(factors=16, iterations=5),
                       ranker=RankerParams(num_boost_round=40, num_leaves=24, min_data_in_leaf=30),
                       n_candidates=80, max_ranker_users=200, ranker_folds=2, neighbors=100)


@pytest.fixture
def no_ray_left():
    """Ray must not be running after a tune; shut it down anyway so one failure does not leak into others."""
    import ray

    assert not ray.is_initialized()
    yield
    still_up = ray.is_initialized()
    ray.shutdown()
    assert not still_up, "run_tune left Ray running"


def tune_args(out: Path, trials: int) -> argparse.Namespace:
    return argparse.Namespace(dataset=SPEC, trials=trials, address=None, cpus=2, out=str(out), seed=42)


def test_validation_split_is_carved_from_the_data_and_disjoint():
    ds = load_dataset(SPEC)
    train_ds, valid = validation_split(ds, 0.2, seed=7)
    assert len(train_ds.interactions) < len(ds.interactions) and valid
    history = train_ds.interactions.groupby("user_id")["item_id"].agg(set)
    for user, items in valid.items():
        assert items and not items & history[user]   # never an item the user already has in training
    again, valid_again = validation_split(ds, 0.2, seed=7)
    assert valid_again == valid and again.interactions.equals(train_ds.interactions)
    _, few = validation_split(ds, 0.2, seed=7, max_users=10)
    assert len(few) == 10 and set(few) <= set(valid)


def test_trial_config_applies_nested_values_as_plain_rounded_scalars():
    import numpy as np

    base = tiny_config()
    cfg = trial_config(base, {"als": {"factors": np.int64(48), "alpha": 3.14159}, "ease_reg": np.float64(123.456)})
    assert cfg.als.factors == 48 and type(cfg.als.factors) is int
    assert cfg.als.alpha == 3.14 and cfg.ease_reg == 123.0
    assert cfg.als.iterations == base.als.iterations and cfg.n_candidates == base.n_candidates
    # a trial's config names every option, so `recsys train` searches none of them (TrainConfig.fixed)
    assert trial_config(base, start_point(base)) == replace(base, fixed=sorted(SEARCHED))
    assert set(flatten(start_point(base))) == set(tuned_keys())
    with pytest.raises(KeyError, match="not a training option"):
        trial_config(base, {"ranker": {"no_such_option": 1}})


def test_asha_never_stops_the_starting_configuration():
    from types import SimpleNamespace

    from recsys.tuning import KeepStartASHA

    start = start_point(tiny_config())
    other = {"als": {"factors": 128}}
    sched = KeepStartASHA(start, time_attr="training_iteration", metric="ndcg", mode="max", max_t=2,
                          grace_period=1, reduction_factor=2)
    trials = [SimpleNamespace(trial_id=f"t{i}", config=c) for i, c in enumerate([other, start, other])]
    for t in trials:
        sched.on_trial_add(None, t)

    def report(trial, ndcg):
        return sched.on_trial_result(None, trial, {"training_iteration": 1, "ndcg": ndcg})

    assert report(trials[0], 0.5) == sched.CONTINUE   # first at the rung: nothing to compare with
    assert report(trials[1], 0.1) == sched.CONTINUE   # below the cutoff, but it is the starting config
    assert report(trials[2], 0.1) == sched.STOP       # the same score stops any other trial


@pytest.mark.slow
def test_tune_writes_a_tuned_config_that_train_reads(tmp_path, no_ray_left):
    import ray

    base = tiny_config()
    out = tmp_path / "tuned.yaml"
    console = Console(record=True, width=200)
    scratch_before = set(Path(tempfile.gettempdir()).glob("recsys-tune-*"))
    # Two sampled trials (no baseline trial), so every tuned value must come from the search space.
    assert run_tune(tune_args(out, 2), console, base=base, include_start=False) == 0
    assert not ray.is_initialized()
    assert set(Path(tempfile.gettempdir()).glob("recsys-tune-*")) <= scratch_before  # trial bundles removed

    text = console.export_text()
    assert "retrieval nDCG@10" in text and "pipeline  nDCG@10" in text       # progress lines
    assert f"recsys tune · {SPEC} · 2 trials" in text and "★" in text      # results table

    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert any(SPEC in line for line in header) and any("best of 2 trials" in line for line in header)
    assert any("objective: validation nDCG@10" in line for line in header)
    tuned = TrainConfig.from_file(out)
    got, start = flatten(tuned.to_dict()), flatten(base.to_dict())
    for key in tuned_keys():
        assert got[key] != start[key], f"{key} was not tuned"
    assert tuned.als.factors in (32, 48, 64, 96, 128)
    assert 0.005 <= tuned.als.regularization <= 0.5 and 50 <= tuned.ease_reg <= 2000
    assert 0.02 <= tuned.ranker.learning_rate <= 0.2 and 0.5 <= tuned.ranker.feature_fraction <= 1.0
    # everything not searched is the starting config's, including threads (trials run with 1)
    assert {k: v for k, v in got.items() if k not in tuned_keys() and k != "fixed"} == {
        k: v for k, v in start.items() if k not in tuned_keys() and k != "fixed"}
    assert tuned.fixed == sorted(SEARCHED)  # the tuned values win over `recsys train`'s own selection
    assert tuned.ranker.threads == base.ranker.threads


@pytest.mark.slow
def test_failing_trials_exit_nonzero_and_still_shut_ray_down(tmp_path, no_ray_left):
    import ray

    out = tmp_path / "tuned.yaml"
    console = Console(record=True, width=200)
    broken = replace(tiny_config(), label_fraction=1.5)  # retrieval stage works, training raises
    assert run_tune(tune_args(out, 1), console, base=broken) == 1
    assert not ray.is_initialized()
    assert not out.exists()
    text = console.export_text()
    assert "no trial completed" in text and "fraction must be in (0, 1), got 1.5" in text


def test_tuned_yaml_shape_is_what_train_reads(tmp_path):
    from recsys.tuning import write_config

    cfg = trial_config(tiny_config(), {"ranker": {"num_leaves": 15}})
    path = tmp_path / "c.yaml"
    write_config(path, cfg, ["line one", "line two"])
    assert path.read_text().startswith("# line one\n# line two\n")
    assert TrainConfig.from_file(path) == cfg
    assert yaml.safe_load(path.read_text())["ranker"]["num_leaves"] == 15
    assert os.path.getsize(path) > 0
