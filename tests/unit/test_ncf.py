"""NeuMF (NCF): config, numpy scoring equal to the torch module, training, the eval baseline and the absent-torch
path. The torch tests skip when PyTorch (the optional `ncf` extra) is not installed, as in CI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.evaluation import baselines, ncf_baseline
from recsys.retrieval import ncf
from recsys.retrieval.ncf import NCFParams
from recsys.training.config import TrainConfig, TrainConfigError

TINY = NCFParams(gmf_dim=4, mlp_dim=8, layers=[16, 8], dropout=0.1, batch_size=256, lr=0.01, max_epochs=6,
                 patience=2, valid_users=200)


def _blocks(n_users: int = 120, n_items: int = 60, seed: int = 0) -> sp.csr_matrix:
    """Two taste groups, each using (mostly) its own half of the catalog: structure any CF model must find."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n_users, n_items), np.float32)
    half = n_items // 2
    for u in range(n_users):
        own = np.arange(half) + (half if u % 2 else 0)
        dense[u, rng.choice(own, 12, replace=False)] = 1.0
        dense[u, rng.integers(0, n_items)] = 1.0
    return sp.csr_matrix(dense)


def test_ncf_options_load_from_the_training_config():
    cfg = TrainConfig.from_dict({"ncf": {"layers": [32, 16], "dropout": 0.3, "propose": False}})
    assert cfg.ncf.layers == [32, 16] and cfg.ncf.dropout == 0.3 and not cfg.ncf.propose
    assert TrainConfig().ncf == NCFParams() and "ncf" not in TrainConfig().sources  # off by default
    with pytest.raises(TrainConfigError, match="ncf"):
        TrainConfig.from_dict({"ncf": {"dropout": 1.5}})
    with pytest.raises(TrainConfigError, match="ncf.layers"):
        TrainConfig.from_dict({"ncf": {"layers": "64"}})


def test_without_torch_the_eval_notes_the_skip_and_training_names_the_extra(monkeypatch):
    monkeypatch.setattr(ncf_baseline, "torch_available", lambda: False)
    notes: list[str] = []
    data = baselines.Interactions(pd.DataFrame({"user_id": ["u"], "item_id": ["a"]}), ["a", "b"])
    assert ncf_baseline.fit(data, TINY, 0, notes=notes) is None
    assert notes and "PyTorch is not installed" in notes[0] and ".[ncf]" in notes[0]

    from recsys.retrieval.sources import ncf as ncf_source

    monkeypatch.setattr(ncf_source, "torch_available", lambda: False)
    with pytest.raises(ncf.TorchMissing, match=r"ncf candidate source.*\.\[ncf\]"):
        ncf_source.NCFSource.build(None)  # type: ignore[arg-type]


def test_numpy_scores_equal_the_torch_module():
    torch = pytest.importorskip("torch")
    from recsys.retrieval.ncf_torch import export, neumf_module

    torch.manual_seed(0)
    model = neumf_module(7, 11, TINY)
    with torch.no_grad():  # weights well away from the tiny initial ones, so the check means something
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.eval()
    users, items = np.meshgrid(np.arange(7), np.arange(11), indexing="ij")
    with torch.no_grad():
        want = model(torch.from_numpy(users.ravel()), torch.from_numpy(items.ravel())).numpy().reshape(7, 11)
    w = export(model, np.array([f"u{i}" for i in range(7)]))
    np.testing.assert_allclose(w.score(np.arange(7)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.score(np.array([3]), np.array([10, 2])), want[[3]][:, [10, 2]], rtol=1e-5, atol=1e-5)


def test_saved_weights_load_and_score_the_same(tmp_path):
    pytest.importorskip("torch")
    from recsys.retrieval.ncf_torch import export, neumf_module

    w = export(neumf_module(3, 5, TINY), np.array(["a", "b", "c"]))
    info = w.save(tmp_path / "ncf.npz")
    back = ncf.NCFWeights.load(tmp_path / "ncf.npz", info)
    assert back.user_ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(back.score(np.arange(3)), w.score(np.arange(3)))


def test_training_learns_the_taste_groups_with_early_stopping():
    pytest.importorskip("torch")
    from recsys.retrieval.ncf_torch import train_ncf

    x = _blocks()
    w = train_ncf(x, np.array([f"u{i}" for i in range(x.shape[0])]), TINY, seed=1)
    # a held-out item is one of ~18 unseen items of the user's own half: perfect group knowledge scores ~0.25,
    # a random ranking of all ~47 unseen items ~0.10
    assert 1 <= w.epochs <= TINY.max_epochs and w.valid_ndcg > 0.15 and w.train_seconds > 0
    scores = w.score(np.arange(x.shape[0]))
    half = x.shape[1] // 2
    own = np.where(np.arange(x.shape[0])[:, None] % 2 == 1, scores[:, half:].mean(1, keepdims=True),
                   scores[:, :half].mean(1, keepdims=True))
    assert (own.ravel() > scores.mean(1)).mean() > 0.9  # each user's own half scores above the catalog mean


def test_the_eval_baseline_recommends_unseen_items_and_scores_for_auc():
    pytest.importorskip("torch")
    x = _blocks(n_users=60, n_items=40)
    r, c = x.nonzero()
    df = pd.DataFrame({"user_id": [f"u{i}" for i in r], "item_id": [f"i{j}" for j in c]})
    data = baselines.Interactions(df, [f"i{j}" for j in range(40)] + ["unseen-item"])
    notes: list[str] = []
    base = ncf_baseline.fit(data, TINY, 0, notes=notes)
    assert base is not None and "ncf: NeuMF trained" in notes[0]
    recs = base.recommend(["u0", "u1", "stranger"], 5)
    assert recs["stranger"] == [] and all(len(recs[u]) == 5 for u in ("u0", "u1"))
    assert not set(recs["u0"]) & set(df.loc[df.user_id == "u0", "item_id"])
    scored = base.score_items({"u0": ["i1", "nope"], "stranger": ["i1"]})
    assert np.isfinite(scored["u0"][0]) and scored["u0"][1] == -np.inf and scored["stranger"][0] == -np.inf
    line = ncf_baseline.versus_article({"systems": {"ncf": {"ndcg@10": 0.4}}, "k": 10, "protocol": "msr",
                                        "dataset": "movielens-100k:x", "ncf": {"train_seconds": 12.0}})
    assert line is not None and "0.396" in line and "same protocol" in line
