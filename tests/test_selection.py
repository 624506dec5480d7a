"""Per-training-set hyperparameter selection (recsys/training/select.py): the searches find a known answer,
explicit config values win, the choice is recorded in the bundle, and serving (offline and over gRPC) uses
the bundle's chosen re-ranker unless a request or the `bundle_reranker` setting says otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.bundle import read_metadata
from recsys.pipeline import rerank_grid
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.offline import OfflineStack
from recsys.training import select
from recsys.training.config import SEARCHES, TrainConfig, TrainConfigError
from recsys.training.trainer import train
from tests.conftest import small_train_config


def _world(kind: str, n_users: int = 600, n_items: int = 300, seed: int = 0) -> tuple[sp.csr_matrix, list[set[str]]]:
    """Histories and held-out items where EASE's best λ is known. "pairs": items come in pairs that are always
    taken together, under heavy popularity noise: the held-out item is the partner of a history item, which only
    the near-unregularized inverse separates from popular items (small λ wins). "popularity": a few items per
    user drawn by popularity alone: there is no structure to fit, only noise (the largest λ wins)."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)
    pop /= pop.sum()
    hist, held = [], []
    for _ in range(n_users):
        if kind == "pairs":
            pairs = rng.choice(n_items // 2, 6, replace=False)
            h = set((2 * pairs).tolist()) | set((2 * pairs[:4] + 1).tolist()) | set(
                rng.choice(n_items, 15, p=pop).tolist())
            rel = set((2 * pairs[4:] + 1).tolist()) - h
        else:
            items = rng.choice(n_items, 12, replace=False, p=pop)
            h, rel = set(items[:8].tolist()), set(items[8:].tolist())
        hist.append(sorted(h))
        held.append({str(i) for i in rel})
    r = [u for u, h in enumerate(hist) for _ in h]
    c = [i for h in hist for i in h]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_users, n_items)), held


@pytest.mark.parametrize(("kind", "expected"), [("pairs", 0), ("popularity", -1)])
def test_ease_search_finds_the_lambda_the_data_calls_for(kind, expected):
    x, held = _world(kind)
    rows = np.arange(200)
    sel = select.Selection()
    cfg = TrainConfig()
    select.select_ease(x, rows, [held[r] for r in rows], np.array([str(i) for i in range(x.shape[1])]), cfg, 1.25,
                       sel, lambda: None)
    grid = select.ease_grid(x, cfg)
    scores = [t["score"] for t in sel.trials]
    assert len(scores) == len(grid) == 5
    assert sel.chosen["ease_reg_validated"] == pytest.approx(grid[expected])
    assert sel.chosen["ease_reg"] == pytest.approx(round(grid[expected] * 1.25, 1))  # scaled for the refit
    assert max(scores) > scores[len(grid) // 2]  # the configured (middle) value is not the answer here
    if kind == "pairs":
        assert scores[0] > 1.5 * scores[-1]  # clearly, not by noise


def test_the_default_rule_on_a_frontier():
    ref = {"reranker": "mmr", "label": rerank_grid.REFERENCE.label, "ndcg@10": 0.50, "miscalibration": 1.0,
           "intra_list_diversity": 0.5}

    def pt(label, ndcg, mis, ild):
        return {"reranker": label, "label": label, "ndcg@10": ndcg, "miscalibration": mis, "intra_list_diversity": ild}

    def chosen(*points):
        result = rerank_grid._marked([dict(ref), *points], 100, 10)
        return rerank_grid.choose_default(result, 10)[0]["label"]

    # meeting the bar: the highest nDCG among the points that do
    assert chosen(pt("a", 0.498, 0.7, 0.5), pt("b", 0.499, 0.79, 0.5), pt("c", 0.49, 0.1, 0.9)) == "b"
    # none meets it: the strongest of those within 1% nDCG (b goes further toward -20% miscalibration)
    assert chosen(pt("a", 0.497, 0.95, 0.5), pt("b", 0.496, 0.85, 0.5), pt("c", 0.40, 0.1, 0.9)) == "b"
    # nothing within 1% is more diverse: no diversification
    assert chosen(pt("a", 0.48, 0.5, 0.6), pt("b", 0.499, 1.1, 0.49)) == rerank_grid.REFERENCE.label


def test_the_neighbour_search_truncates_one_ease_fit_per_candidate():
    x, held = _world("pairs")
    rows = np.arange(200)
    labels, ids = [held[r] for r in rows], np.array([str(i) for i in range(x.shape[1])])
    sel, cfg = select.Selection(), TrainConfig()
    select.select_ease(x, rows, labels, ids, cfg, 1.0, sel, lambda: None)
    lam = sel.chosen["ease_reg_validated"]
    select.select_neighbors(x, rows, labels, ids, cfg, lam, sel, lambda: None)
    trials = {t["candidate"]: t["score"] for t in sel.trials if t["search"] == "neighbors"}
    assert list(trials) == ["100", "200", "299"]  # the configured 1,000 is every weight of 300 items
    # all weights kept is exactly the table the λ search scored at the chosen λ
    ease_scores = {t["candidate"]: t["score"] for t in sel.trials if t["search"] == "ease"}
    assert trials["299"] == pytest.approx(ease_scores[f"{lam:g}"])
    assert str(sel.chosen["neighbors"]) in trials and "neighbors" in sel.reasons
    assert trials[str(sel.chosen["neighbors"])] >= trials["299"] - select.MARGIN["neighbors"] - 1e-9
    many = select.Selection()
    select.select_neighbors(sp.csr_matrix((1, select.EASE_MAX_ITEMS + 1), dtype=np.float32), np.zeros(1, np.int64),
                            [set()], np.array([]), cfg, 400.0, many, lambda: None)
    assert not many.trials and "cosine" in many.reasons["neighbors"]


def test_config_file_values_are_not_searched():
    cfg = TrainConfig.from_dict({"ease_reg": 123.0, "als": {"factors": 12}, "ranker": {"num_leaves": 5}})
    assert cfg.fixed == ["als.factors", "ease_reg", "ranker.num_leaves"]
    assert cfg.searched("ease") == () and cfg.searched("als") == ("als.regularization",)
    assert cfg.searched("trees") == ("ranker.min_data_in_leaf",)
    assert TrainConfig.from_dict({"select": []}).searched("reranker") == ()
    assert cfg.searched("neighbors") == ("neighbors",)
    assert TrainConfig.from_dict({"neighbors": 300}).searched("neighbors") == ()
    with pytest.raises(TrainConfigError, match="select"):
        TrainConfig.from_dict({"select": ["ease", "everything"]})
    with pytest.raises(TrainConfigError, match="select_grid"):
        TrainConfig.from_dict({"select_grid": "huge"})


def test_the_bundle_records_the_selection_and_serves_its_choice(small_bundle):
    meta = read_metadata(small_bundle)
    sel = meta.params["selection"]
    assert set(sel["reasons"]) == set(SEARCHES)
    for search in SEARCHES:
        trials = [t for t in sel["trials"] if t["search"] == search]
        assert len(trials) >= 2 and sum(t["chosen"] for t in trials) == 1, search
        assert all(np.isfinite(t["score"]) and t["seconds"] >= 0 for t in trials)
    assert meta.params["ease_reg"] == sel["chosen"]["ease_reg"]
    assert meta.params["neighbors"] == sel["chosen"]["neighbors"]
    assert meta.params["als"]["factors"] == sel["chosen"]["als.factors"]
    assert meta.params["ranker"]["num_leaves"] == sel["chosen"]["ranker.num_leaves"]
    defaults = meta.params["serving_defaults"]
    assert defaults == sel["chosen"]["serving_defaults"] and defaults["reranker"] in ("mmr", "calibrated",
                                                                                      "category_caps", "longtail")
    assert meta.metrics["selection_seconds"] > 0
    stack = OfflineStack.from_bundle(small_bundle)
    assert stack.model.defaults == defaults
    assert stack.pipeline == PipelineConfig().with_defaults(defaults)
    assert OfflineStack.from_bundle(small_bundle, bundle_defaults=False).pipeline == PipelineConfig()
    assert "configured" in select.table(sel).columns[4].header


def test_explicit_values_win_and_select_turns_searches_off(small_dataset, tmp_path: Path):
    base = small_train_config()
    cfg = TrainConfig.from_dict({"ease_reg": 123.0, "als": {"factors": 12, "iterations": 8},
                                 "select": ["ease", "als", "reranker"], "select_grid": "small",
                                 "n_candidates": 100, "max_ranker_users": 400,
                                 "ranker": {"num_boost_round": base.ranker.num_boost_round}})
    meta = train(small_dataset, tmp_path / "fixed", cfg, show_progress=False)
    sel = meta.params["selection"]
    assert meta.params["ease_reg"] == 123.0 and meta.params["als"]["factors"] == 12
    assert {t["search"] for t in sel["trials"]} == {"als", "reranker"}  # ALS's regularization is still free
    assert {t["candidate"].split()[0] for t in sel["trials"] if t["search"] == "als"} == {"factors=12"}
    assert "source_quotas" not in sel["chosen"] and meta.params["ranker"]["num_leaves"] == base.ranker.num_leaves

    off = train(small_dataset, tmp_path / "off", replace(base, select=[]), show_progress=False)
    assert off.params["selection"]["trials"] == [] and off.params["serving_defaults"] == {}
    assert off.params["ease_reg"] == base.ease_reg and off.params["als"] == meta.params["als"] | {
        "factors": base.als.factors, "regularization": base.als.regularization}
    stack = OfflineStack.from_bundle(tmp_path / "off")
    assert stack.pipeline == PipelineConfig()  # no choice recorded: the service's settings


@pytest.mark.integration
def test_serving_uses_the_bundles_reranker_unless_told_otherwise(cluster, small_bundle, small_dataset):
    from recsys.client import RecommenderClient

    defaults = read_metadata(small_bundle).params["serving_defaults"]
    users = [str(u) for u in small_dataset.interactions["user_id"].value_counts().index[:5]]
    offline = OfflineStack.from_bundle(small_bundle).recommend_many(users, 10)
    plain = OfflineStack.from_bundle(small_bundle, bundle_defaults=False)
    with RecommenderClient(cluster.target) as client:
        for u in users:
            served = client.recommend(u, 10)
            assert [it.item_id for it in served.items] == [it.item_id for it in offline[u].items]
            if defaults["reranker"] == "mmr":
                assert served.diversity_lambda == pytest.approx(defaults["diversity_lambda"])
            # a request's own re-ranker and λ still win over the bundle's default
            asked = client.recommend(u, 10, reranker="mmr", diversity_lambda=0.8)
            want = plain.recommend_many([u], 10, diversity_lambda=0.8)[u]
            assert [it.item_id for it in asked.items] == [it.item_id for it in want.items]
