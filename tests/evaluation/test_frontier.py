"""The re-ranking frontier on a small synthetic dataset: every grid point measured on validation and test,
the reference is MMR λ = 1, the re-rankers move the metrics they target, and the report renders."""

from __future__ import annotations

import pytest

from recsys.evaluation import frontier, frontier_report
from recsys.evaluation.runner import split
from tests.conftest import small_train_config


@pytest.fixture(scope="module")
def result(small_dataset) -> dict:
    return frontier.run(small_dataset, "msr", 10, 42, split, small_train_config(), "synthetic:small")


def test_every_grid_point_on_both_splits(result):
    for part in ("valid", "test"):
        pts = result[part]["points"]
        assert [p["label"] for p in pts] == [p.label for p in frontier.GRID]
        assert result[part]["reference"] == "mmr diversity_lambda=1"
        assert all(0 <= p["ndcg@10"] <= 1 and p["miscalibration"] >= 0 for p in pts)
        assert set(result[part]["best"]) == {"mmr", "calibrated", "category_caps", "longtail"}


def test_the_rerankers_move_what_they_target(result):
    pts = {p["label"]: p for p in result["test"]["points"]}
    ref = pts["mmr diversity_lambda=1"]
    assert pts["calibrated calibration_lambda=0.9"]["miscalibration"] < ref["miscalibration"]
    assert pts["category_caps category_cap=1"]["intra_list_diversity"] > ref["intra_list_diversity"]
    assert pts["mmr diversity_lambda=0.5"]["intra_list_diversity"] > ref["intra_list_diversity"]


def test_the_bar_by_hand():
    ref = {"ndcg@10": 0.5, "miscalibration": 1.0, "intra_list_diversity": 0.5}
    assert frontier.meets_bar({"ndcg@10": 0.496, "miscalibration": 0.8, "intra_list_diversity": 0.5}, ref, 10)
    assert frontier.meets_bar({"ndcg@10": 0.5, "miscalibration": 1.0, "intra_list_diversity": 0.515}, ref, 10)
    assert not frontier.meets_bar({"ndcg@10": 0.494, "miscalibration": 0.1, "intra_list_diversity": 0.9}, ref, 10)
    assert not frontier.meets_bar({"ndcg@10": 0.5, "miscalibration": 0.81, "intra_list_diversity": 0.514}, ref, 10)


def test_the_report_section_and_plot(result, tmp_path):
    md = frontier_report.write(tmp_path, result)
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert "## Re-ranking frontier" in md and "calibrated calibration_lambda=0.5" in md
    assert frontier_report.table(result, "valid").row_count == len(frontier.GRID)
    # where the default sits: the point the training rule picks on validation, marked on both splits
    chosen, why = frontier.choose_default(result["valid"], 10)
    assert result["default"] == {"label": chosen["label"], "why": why}
    assert md.count("◀ default") == 2 and f"`recsys train`'s rule: {chosen['label']}" in md
