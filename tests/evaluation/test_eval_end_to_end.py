"""`recsys eval` end to end: split, train, run the serving pipeline and baselines, write JSON and a report."""

import json
import math
from pathlib import Path

import pytest

from recsys.data.synthetic import generate
from recsys.evaluation.report import write_report
from recsys.evaluation.runner import evaluate, run
from recsys.ranking.model import RankerParams
from recsys.retrieval.als import ALSParams
from recsys.training.config import TrainConfig

K = 10
PER_SYSTEM = [
    f"precision@{K}",
    f"recall@{K}",
    f"ndcg@{K}",
    f"map@{K}",
    "auc",
    "catalog_coverage",
    "intra_list_diversity",
    "novelty",
    "gini",
    f"ndcg@{K}_light",
    f"ndcg@{K}_medium",
    f"ndcg@{K}_heavy",
]
SYSTEMS = ["pipeline", "pipeline_no_diversity", "retrieval", "popularity", "ease", "als"]


def _check_shape(summary: dict, protocol: str, n_candidates: int) -> None:
    assert summary["protocol"] == protocol and summary["k"] == K
    assert list(summary["systems"]) == SYSTEMS
    for name, m in summary["systems"].items():
        for key in PER_SYSTEM:
            assert m[key] is not None and math.isfinite(m[key]), (name, key)
        for key in PER_SYSTEM[:3] + ["catalog_coverage", "intra_list_diversity", "gini"]:
            assert 0.0 <= m[key] <= 1.0, (name, key, m[key])
    for name in ("pipeline", "pipeline_no_diversity", "retrieval"):
        assert 0.0 < summary["systems"][name][f"candidate_recall@{n_candidates}"] <= 1.0
    assert set(summary["segments"]) == {"light", "medium", "heavy"}
    json.dumps(summary)  # serialisable as is


@pytest.mark.parametrize("protocol", ["msr", "temporal"])
def test_synthetic_eval(protocol, tmp_path):
    ds = generate(n_users=300, n_items=400, n_interactions=15_000, seed=1)
    cfg = TrainConfig(
        als=ALSParams(factors=16, iterations=8),
        ranker=RankerParams(num_boost_round=60),
        n_candidates=100,
        ranker_folds=1,
        max_ranker_users=300,
    )
    if protocol == "temporal":
        summary = evaluate(ds, protocol, K, 42, cfg)
    else:
        result = run(ds, protocol, K, 42, cfg)
        summary = result.summary
        report = write_report(tmp_path, summary, result.recs, result.item_popularity)
        pngs = {"metrics.png", "segments.png", "popularity.png", "long_tail.png", "fairness.png"}
        assert {p.name for p in tmp_path.iterdir()} == {"report.md"} | pngs
        assert "| catalog_coverage |" in report.read_text()
    _check_shape(summary, protocol, 100)
    s = summary["systems"]
    assert 250 < summary["n_test_users"] <= 300 and summary["n_catalog_items"] == 400  # 1-2 event users: no test
    assert s["pipeline"][f"ndcg@{K}"] > s["popularity"][f"ndcg@{K}"]
    assert s["popularity"]["catalog_coverage"] < s["pipeline"]["catalog_coverage"]


@pytest.mark.slow
def test_movielens_100k_eval_and_report(ml100k_path, tmp_path):
    from recsys.data.spec import load_dataset

    ds = load_dataset(f"movielens-100k:{ml100k_path}")
    result = run(ds, "msr", K, 42, TrainConfig(ranker_folds=1, max_ranker_users=400))
    summary = result.summary
    _check_shape(summary, "msr", 300)
    s = summary["systems"]
    assert summary["n_test_users"] == 943 and summary["n_catalog_items"] == 1682
    assert s["pipeline"][f"ndcg@{K}"] > 1.5 * s["popularity"][f"ndcg@{K}"]
    assert s["pipeline"]["intra_list_diversity"] > s["pipeline_no_diversity"]["intra_list_diversity"]
    assert s["ease"][f"ndcg@{K}"] > 1.5 * s["popularity"][f"ndcg@{K}"]
    assert s["retrieval"]["candidate_recall@300"] > 0.7

    report = write_report(tmp_path / "report", summary, result.recs, result.item_popularity)
    text = report.read_text()
    assert "| ndcg@10 |" in text and "pipeline_no_diversity" in text
    for png in ("metrics.png", "segments.png", "popularity.png"):
        path = Path(report.parent / png)
        assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
