"""Beyond-accuracy metrics on hand-computed examples."""

import math

import numpy as np
import pytest

from recsys.evaluation import beyond
from recsys.ranking.mmr import similarity_matrix


def test_catalog_coverage_counts_distinct_items_in_top_k():
    recs = {"a": ["1", "2", "3"], "b": ["3", "4"]}
    assert beyond.catalog_coverage(recs, 10, k=2) == pytest.approx(4 / 10)  # {1, 2, 3, 4}
    assert beyond.catalog_coverage(recs, 10, k=1) == pytest.approx(2 / 10)  # {1, 3}
    assert beyond.catalog_coverage({}, 10, k=5) == 0.0


def _table_similarity(pairs: dict[frozenset, float]):
    def sim(ids: list[str]) -> np.ndarray:
        n = len(ids)
        return np.array([[1.0 if i == j else pairs[frozenset((ids[i], ids[j]))] for j in range(n)] for i in range(n)])

    return sim


def test_intra_list_diversity_is_mean_pairwise_dissimilarity_averaged_over_users():
    sim = _table_similarity({frozenset("xy"): 0.5, frozenset("xz"): 0.0, frozenset("yz"): 1.0})
    # [x, y, z]: pairs 1-0.5, 1-0, 1-1 -> 0.5; [x, z]: 1.0; [y]: no pair, left out
    recs = {"u": ["x", "y", "z"], "v": ["x", "z"], "w": ["y"]}
    assert beyond.intra_list_diversity(recs, sim, k=10) == pytest.approx(0.75)
    # k cuts the lists first: [x, y] -> 0.5 and [x, z] -> 1.0
    assert beyond.intra_list_diversity(recs, sim, k=2) == pytest.approx(0.75)
    assert beyond.intra_list_diversity({"w": ["y"]}, sim, k=10) == 0.0


def test_item_similarity_is_the_mmr_similarity():
    emb = {"1": [1.0, 0.0], "2": [0.0, 1.0], "3": [1.0, 0.0]}
    cats = {"1": ["a"], "2": ["a"], "3": ["b"]}
    sim = beyond.ItemSimilarity(lambda ids: np.array([emb[i] for i in ids], dtype=np.float32), cats)
    ids = ["1", "2", "3"]
    expected = similarity_matrix(np.array([emb[i] for i in ids], dtype=np.float32), [cats[i] for i in ids])
    np.testing.assert_allclose(sim(ids), expected)
    # s(1,2) = .5·cos 0 + .5·Jaccard 1 = .5; s(1,3) = .5·1 + .5·0 = .5; s(2,3) = 0 -> ILD = (.5 + .5 + 1) / 3
    assert beyond.intra_list_diversity({"u": ids}, sim, k=3) == pytest.approx(2 / 3)


def test_novelty_is_mean_self_information_with_unseen_items_counted_once():
    pop = {"a": 8, "b": 2, "c": 1}
    recs = {"u": ["a", "b"], "v": ["c", "d"]}  # u: (0 + 2) / 2 = 1 bit; v: (3 + 3) / 2 = 3 bits ("d" unseen -> pop 1)
    assert beyond.novelty(recs, pop, n_users=8, k=10) == pytest.approx(2.0)
    assert beyond.novelty(recs, pop, n_users=8, k=1) == pytest.approx((0 + 3) / 2)


def test_gini():
    assert beyond.gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert beyond.gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)  # (2·4 − 4 − 1)·4 / (4·4)
    assert beyond.gini(np.array([3, 1, 2])) == pytest.approx(4 / 18)  # sorted 1,2,3 weights −2,0,2
    assert beyond.gini(np.array([0, 0])) == 0.0


def test_exposure_gini_counts_never_recommended_catalog_items_as_zero():
    recs = {"u": ["a", "b"], "v": ["a"], "w": ["zz"]}  # "zz" is not in the catalog: ignored
    # counts a=2, b=1, c=0, d=0 -> sorted 0,0,1,2 with weights −3,−1,1,3 -> 7 / (4·3)
    assert beyond.exposure_gini(recs, ["a", "b", "c", "d"], k=10) == pytest.approx(7 / 12)


def test_user_segments_are_equal_size_tertiles_of_history_length():
    hist = {"u1": 1, "u2": 5, "u3": 2, "u4": 9, "u5": 3, "u6": 3, "u7": 4}
    seg = beyond.user_segments(hist)
    assert seg == {"light": ["u1", "u3", "u5"], "medium": ["u6", "u7"], "heavy": ["u2", "u4"]}


def test_ndcg_by_segment_averages_within_each_segment():
    truth = {"u1": {"a"}, "u2": {"b"}, "u3": {"c"}}
    recs = {"u1": ["a"], "u2": ["x", "b"], "u3": ["x"]}
    out = beyond.ndcg_by_segment(recs, truth, {"light": ["u1", "u2"], "medium": ["u3"], "heavy": []}, k=10)
    assert out["light"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert out["medium"] == 0.0
    assert math.isnan(out["heavy"])
