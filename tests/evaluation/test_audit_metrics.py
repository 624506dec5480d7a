"""AUC, popularity-bias and fairness metrics on tiny, hand-computed examples."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation import baselines
from recsys.evaluation.auc import AucSample, auc, ranking_scores, sample_negatives, served_then_scored
from recsys.evaluation.fairness import age_band, fairness, group_metrics, resolve_attributes, user_attributes
from recsys.evaluation.popularity import (
    average_recommended_popularity,
    long_tail_share,
    popularity_bias,
    short_head,
    training_stats,
)

INF = -np.inf


# --- AUC ---------------------------------------------------------------------------------------------


def test_auc_counts_pairs_and_half_ties():
    assert auc(np.array([3.0, 1.0]), np.array([2.0, 0.0])) == 0.75  # 3>2, 3>0, 1<2, 1>0
    assert auc(np.array([1.0]), np.array([1.0, 0.0])) == 0.75  # a tie counts ½
    assert auc(np.array([5.0]), np.array([1.0, 2.0])) == 1.0
    assert math.isnan(auc(np.array([]), np.array([1.0])))


def test_unscored_items_rank_below_scored_ones_and_tie_with_each_other():
    assert auc(np.array([INF]), np.array([INF, 5.0])) == 0.25  # ½ (tie) + 0 over 2 pairs
    assert auc(np.array([0.0]), np.array([INF, INF])) == 1.0
    assert auc(np.full(3, INF), np.full(4, INF)) == 0.5  # a system that scores nothing


def test_ranking_scores_follow_positions():
    np.testing.assert_array_equal(ranking_scores(["a", "b"], ["b", "c", "a"]), [-1.0, INF, 0.0])


def test_pipeline_ranking_is_served_list_then_candidates_by_score():
    ranked = served_then_scored(["c"], ["a", "b", "c", "d"], np.array([0.1, 0.9, 0.5, np.nan]))
    assert ranked == ["c", "b", "a", "d"]  # NaN score last


def test_negatives_avoid_training_and_test_items_and_are_seeded_per_user():
    catalog = list("abcdefgh")
    excluded = {"u": {"a", "b", "c"}, "v": set()}
    one = sample_negatives(catalog, excluded, ["u"], 3, seed=7)
    both = sample_negatives(catalog, excluded, ["v", "u"], 3, seed=7)
    assert one["u"] == both["u"]  # the same sample whichever users are evaluated
    assert len(set(one["u"])) == 3 and not set(one["u"]) & excluded["u"]
    assert len(sample_negatives(catalog, excluded, ["u"], 10, seed=7)["u"]) == 5  # all there is


def test_auc_sample_and_mean():
    catalog = list("abcdef")
    sample = AucSample.build(catalog, {"u": {"a"}}, {"u": {"a", "b", "c"}}, n=2, seed=1)
    assert sample.n_pos == {"u": 2}  # "a" was in training: not a positive
    pos, neg = sample.items["u"][:2], sample.items["u"][2:]
    assert pos == ["b", "c"] and set(neg) <= {"d", "e", "f"} and len(neg) == 2
    # b above both negatives, c below both: AUC ½
    scores = {"u": np.array([10.0, -10.0, 0.0, 0.0])}
    assert sample.mean_auc(scores) == 0.5
    assert sample.mean_auc({}) == 0.5  # nothing scored


def test_baseline_item_scores_mark_unknown_users_and_items_unscored():
    df = pd.DataFrame([("u1", "a"), ("u1", "b"), ("u2", "a")], columns=["user_id", "item_id"])
    data = baselines.Interactions(df, ["a", "b", "c"])
    out = baselines.score_items(data, baselines.popularity_scorer(data), {"u1": ["c", "a", "zz"], "new": ["a"]})
    np.testing.assert_array_equal(out["u1"], [0.0, 2.0, INF])
    np.testing.assert_array_equal(out["new"], [INF])


# --- popularity bias ---------------------------------------------------------------------------------

POP = {"a": 5, "b": 3, "c": 1, "d": 1}  # 10 training interactions


def test_short_head_covers_80_percent_of_interactions():
    assert short_head(POP) == {"a", "b"}  # 5 < 8, 5 + 3 = 8 ≥ 8
    assert short_head(POP, share=0.5) == {"a"}
    assert short_head({"x": 2, "y": 2, "z": 1}) == {"x", "y"}  # 2 < 4, 4 ≥ 4


def test_arp_and_long_tail_share():
    recs = {"u1": ["a", "b"], "u2": ["c", "unseen"], "u3": []}
    assert average_recommended_popularity(recs, POP, k=2) == 2.25  # (4 + 0.5) / 2; empty list left out
    assert long_tail_share(recs, {"a", "b"}, k=2) == 0.5  # u1 0, u2 1
    assert average_recommended_popularity(recs, POP, k=1) == 3.0  # (5 + 1) / 2


def test_training_reference_statistics():
    ref = training_stats({"u1": ["a", "b", "c"], "u2": ["d"]}, POP, {"a", "b"}, list("abcde"))
    assert ref["arp"] == 2.0  # (9/3 + 1) / 2
    assert ref["long_tail_share"] == pytest.approx(2 / 3)  # (1/3 + 1) / 2
    assert ref["exposure_gini"] == pytest.approx(0.48)  # counts 0,1,1,3,5: (−2 + 6 + 20) / (5·10)
    assert ref["catalog_coverage"] == 0.8
    out = popularity_bias({"sys": {"u1": ["a", "a"]}}, {"u1": ["a", "b", "c"], "u2": ["d"]}, POP, list("abcde"), 2)
    assert out["sys"]["arp"] == 5.0 and out["sys"]["arp_lift"] == 2.5 and out["sys"]["catalog_coverage"] == 0.2
    assert out["training"]["short_head_items"] == 2


# --- fairness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "band"),
    [
        ("0-17", "<25"),
        ("18-24", "<25"),
        ("25-34", "25-34"),
        ("35-44", "35-44"),
        ("45-54", "45+"),
        ("65+", "45+"),
        ("31", "25-34"),
        ("n/a", "unknown"),
    ],
)
def test_age_bands_merge_buckets(label, band):
    assert age_band(label) == band


def _users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "gender": ["F", "M", "M"],
            "age_bucket": ["18-24", "25-34", "55-64"],
            "country": ["US", "US", "US"],
        }
    )


def test_attributes_default_all_and_unknown():
    attrs = user_attributes(_users())
    assert attrs.loc["u3", "age_band"] == "45+"
    assert resolve_attributes(attrs, None) == ["gender", "age_band"]
    assert resolve_attributes(attrs, ["all"]) == ["gender", "age_bucket", "age_band"]  # one-level country is no group
    assert resolve_attributes(attrs, ["country"]) == ["country"]
    with pytest.raises(ValueError, match="occupation"):
        resolve_attributes(attrs, ["occupation"])


def test_group_metrics_gap_is_max_minus_min_and_min_over_max():
    res = group_metrics({"ndcg": {"u1": 1.0, "u2": 0.0, "u3": 0.5}}, {"u1": "F", "u2": "M", "u3": "M"})
    assert res["groups"] == {"F": {"users": 1, "ndcg": 1.0}, "M": {"users": 2, "ndcg": 0.25}}
    assert res["overall"]["ndcg"] == 0.5
    assert res["gap"]["ndcg"] == {"difference": 0.75, "ratio": 0.25, "max_group": "F", "min_group": "M"}


def test_fairness_by_attribute_with_unknown_users():
    recs = {"sys": {"u1": ["a", "x"], "u2": ["x", "y"], "u4": ["c"]}}
    truth = {"u1": {"a"}, "u2": {"a"}, "u4": {"c"}}
    out = fairness(recs, truth, user_attributes(_users()), ["gender"], POP, {"a", "b"}, k=2)
    groups = out["gender"]["sys"]["groups"]
    assert set(groups) == {"F", "M", "unknown"}  # u4 is not in the users table
    assert groups["F"]["ndcg@2"] == 1.0 and groups["M"]["ndcg@2"] == 0.0 and groups["unknown"]["ndcg@2"] == 1.0
    assert groups["F"]["arp"] == 2.5 and groups["M"]["long_tail_share"] == 1.0
    assert out["gender"]["sys"]["gap"]["recall@2"]["difference"] == 1.0


def test_groups_option_is_checked_before_training(capsys):
    from recsys.cli import main
    from recsys.evaluation.audit import parse_groups

    assert parse_groups(None, _users()) is None
    assert parse_groups("gender, country", _users()) == ["gender", "country"]
    with pytest.raises(ValueError, match="nope"):
        parse_groups("nope", _users())
    # an unknown name exits 2 at once, naming the columns there are (no training first)
    assert main(["eval", "--dataset", "synthetic:users=30,items=20,interactions=200", "--groups", "nope"]) == 2
    assert "age_bucket" in capsys.readouterr().out
