"""Training on large data sets (issue 13): validation users are sampled above a cap and the bundle says so, and
the searches that cannot run at catalog scale are skipped with a reason or done in bounded memory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.bundle import read_metadata
from recsys.retrieval.item2item import EASE_MAX_ITEMS
from recsys.training import select
from recsys.training.config import TrainConfig
from recsys.training.trainer import train


def test_the_bundle_records_its_user_sample(small_bundle, small_dataset):
    """Below the cap nothing is sampled, and the bundle records the counts the validation used."""
    sample = read_metadata(small_bundle).params["user_sample"]
    assert sample["validation_sampled"] is False
    assert sample["validation_users"] == int(sample["users_with_labels"] * sample["validation_share"])
    assert sample["users_with_labels"] == small_dataset.interactions["user_id"].nunique()
    assert 0 < sample["ranker_users_per_fold"] <= sample["ranker_pool"]


def test_validation_users_above_the_cap_are_a_recorded_sample(small_dataset, tmp_path: Path):
    from tests.conftest import small_train_config

    cfg = replace(small_train_config(), max_valid_users=25, select=[], ranker_folds=1, ann_indexes=["exact"])
    meta = train(small_dataset, tmp_path / "b", cfg, show_progress=False)
    sample = meta.params["user_sample"]
    assert sample["validation_users"] == 25 and sample["validation_sampled"] is True
    assert sample["max_valid_users"] == 25 == meta.params["max_valid_users"]
    assert sample["users_with_labels"] * sample["validation_share"] > 25
    # the lists the ranker trained on come from the rest of the users, up to max_ranker_users minus the sample
    assert sample["ranker_users_per_fold"] == min(cfg.max_ranker_users - 25, sample["ranker_pool"])
    assert 0.0 < meta.metrics["valid_ndcg@10"] <= 1.0


def test_the_folds_share_one_item_row_map(small_dataset, tmp_path: Path, monkeypatch):
    """Every fold holds the whole catalog: their embeddings share one item → row map (a million-entry dict at
    1M items) instead of building one each."""
    from recsys.training import trainer
    from tests.conftest import small_train_config

    folds = []
    make_fold = trainer.make_fold
    monkeypatch.setattr(trainer, "make_fold", lambda *a, **k: folds.append(make_fold(*a, **k)) or folds[-1])
    cfg = replace(small_train_config(), select=[], ranker_folds=2, ann_indexes=["exact"])
    train(small_dataset, tmp_path / "b", cfg, show_progress=False)
    assert len(folds) == 2 and folds[0].emb.item_row is folds[1].emb.item_row
    ids = folds[0].art.item_ids.tolist()
    assert folds[0].emb.item_row == {x: i for i, x in enumerate(ids)}


def test_max_valid_users_must_be_positive():
    with pytest.raises(ValueError, match="max_valid_users"):
        TrainConfig(max_valid_users=0)


def test_the_ease_search_is_skipped_above_the_ease_catalog_size_without_fitting_anything():
    """Above EASE_MAX_ITEMS the i2i source uses cosine neighbours: λ has no effect, so nothing is fit."""
    n = EASE_MAX_ITEMS + 1
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((np.ones(3000, np.float32), (rng.integers(0, 200, 3000), rng.integers(0, n, 3000))),
                      shape=(200, n))
    sel = select.Selection()
    ticks = []
    select.select_ease(x, np.arange(10), [set()] * 10, np.array([f"i{i}" for i in range(n)]), TrainConfig(), 1.0,
                       sel, lambda: ticks.append(1))
    assert not sel.trials and not ticks and "ease_reg" not in sel.chosen
    assert sel.reasons["ease"].startswith("not searched") and "cosine" in sel.reasons["ease"]


def test_scores_in_chunks_give_the_whole_matrix_ndcg():
    """_top_ndcg scores a large catalog's users in chunks of rows: the same nDCG as scoring them at once."""
    rng = np.random.default_rng(1)
    n_users, n_items = 57, 400
    users, items = rng.normal(size=(n_users, 6)), rng.normal(size=(n_items, 6))
    seen = sp.csr_matrix((rng.random((n_users, n_items)) < 0.05).astype(np.float32))
    ids = np.array([f"i{i}" for i in range(n_items)])
    labels = [set(ids[rng.choice(n_items, 5, replace=False)].tolist()) for _ in range(n_users)]
    whole = select._top_ndcg(users @ items.T, seen, labels, ids)
    chunked = select._top_ndcg(lambda rows: users[rows] @ items.T, seen, labels, ids, chunk=3 * n_items)
    assert whole == chunked and whole > 0.0
