import math

import pytest

from recsys.ranking.metrics import map_at_k, ndcg_at_k, precision_at_k, recall_at_k


def test_ndcg_hand_computed():
    rec = ["a", "b", "c", "d"]
    rel = {"b", "d", "z"}
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(rec, rel, 4) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "d", "z"], rel, 3) == pytest.approx(1.0)
    assert ndcg_at_k(rec, set(), 4) == 0.0


def test_precision_recall_map():
    rec = ["a", "b", "c", "d"]
    rel = {"a", "c", "x", "y"}
    assert precision_at_k(rec, rel, 4) == 0.5
    assert recall_at_k(rec, rel, 4) == 0.5
    assert map_at_k(rec, rel, 4) == pytest.approx((1 / 1 + 2 / 3) / 4)
    assert precision_at_k(["a"], rel, 10) == 0.1
