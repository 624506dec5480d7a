"""`recsys eval`'s AUC column and fairness/popularity audit end to end on a small synthetic dataset."""

import json

from recsys.data.synthetic import generate
from recsys.evaluation import audit_report
from recsys.evaluation.report import write_report
from recsys.evaluation.runner import run
from recsys.ranking.model import RankerParams
from recsys.retrieval.als import ALSParams
from recsys.training.config import TrainConfig

K = 10


def test_auc_fairness_and_popularity_bias_end_to_end(tmp_path):
    ds = generate(n_users=200, n_items=250, n_interactions=8_000, seed=3)
    cfg = TrainConfig(
        als=ALSParams(factors=8, iterations=5),
        ranker=RankerParams(num_boost_round=30),
        n_candidates=80,
        ranker_folds=1,
        max_ranker_users=200,
    )
    result = run(ds, "msr", K, 42, cfg, als_baseline=False, fairness_attributes=["gender", "age_band", "country"])
    s = result.summary
    json.dumps(s)  # serialisable as is
    systems = s["systems"]
    for name in ("pipeline", "pipeline_no_diversity", "retrieval", "popularity", "ease"):
        assert 0.5 < systems[name]["auc"] <= 1.0, name
    assert systems["ease"]["auc"] > systems["popularity"]["auc"]
    assert s["auc"]["negatives_per_user"] == 100 and 0 < s["auc"]["users"] <= s["n_test_users"]

    pb = s["popularity_bias"]
    assert list(pb) == ["training", *systems]
    assert pb["popularity"]["arp_lift"] > pb["pipeline"]["arp_lift"] > 1.0  # every system amplifies popularity
    assert (
        pb["popularity"]["long_tail_share"] == 0.0
        and pb["popularity"]["exposure_gini"] > pb["training"]["exposure_gini"]
    )

    assert s["fairness_attributes"] == ["gender", "age_band", "country"]
    bands = s["fairness"]["age_band"]["pipeline"]
    assert set(bands["groups"]) <= {"<25", "25-34", "35-44", "45+"}
    assert sum(g["users"] for g in bands["groups"].values()) == s["n_test_users"]
    gap = bands["gap"][f"ndcg@{K}"]
    values = [g[f"ndcg@{K}"] for g in bands["groups"].values()]
    assert abs(gap["difference"] - (max(values) - min(values))) < 1e-5
    assert bands["groups"][gap["max_group"]][f"ndcg@{K}"] == max(values)

    tables = audit_report.tables(s)
    assert [t.title.split(":")[0].split(" (")[0] for t in tables] == [
        "popularity bias",
        "fairness",
        "group gaps per system",
    ]
    report = write_report(tmp_path, s, result.recs, result.item_popularity)
    text = report.read_text()
    assert "| auc |" in text and "## Popularity bias" in text and "## Fairness by user group" in text
    for png in ("long_tail.png", "fairness.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in text
