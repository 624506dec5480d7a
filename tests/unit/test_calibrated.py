"""Calibrated re-ranking on a hand-computed example (Steck 2018)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.ranking.calibrated import _kl_on_support, calibrated, category_distributions


def _kl(p, q, alpha):
    """KL(p ‖ (1−α)q + αp) for each row of q, over every category."""
    support = p > 0
    return _kl_on_support(p[support], np.log(p[support]), q[..., support], alpha)


HISTORY = [["A"], ["A"], ["B"]]          # p = (2/3, 1/3)
ITEMS = [["A"], ["A"], ["B"]]
REL = np.array([1.0, 0.9, 0.5])


def test_several_categories_split_the_items_weight():
    d = category_distributions([["A", "B"], ["B"], []], {"A": 0, "B": 1})
    assert d.tolist() == [[0.5, 0.5], [0.0, 1.0], [0.0, 0.0]]


def test_kl_matches_the_hand_computed_value():
    p = np.array([2 / 3, 1 / 3])
    # q = (1, 0): q~ = (0.99 + 0.01*2/3, 0.01/3)
    want = 2 / 3 * math.log((2 / 3) / (0.99 + 0.02 / 3)) + 1 / 3 * math.log((1 / 3) / (0.01 / 3))
    assert _kl(p, np.array([[1.0, 0.0]]), 0.01)[0] == pytest.approx(want) == pytest.approx(1.26701, abs=1e-4)


def test_calibration_swaps_in_the_missing_category():
    # step 1: gains -0.134 (A, 1.0), -0.184 (A, 0.9), -1.103 (B): take 0;
    # step 2: another A keeps KL 1.267 (gain -0.184); B makes q = (1/2, 1/2), KL 0.0556 (gain 0.222)
    assert calibrated(REL, 2, 0.5, ITEMS, HISTORY).tolist() == [0, 2]


def test_lambda_zero_or_no_history_is_the_relevance_order():
    assert calibrated(REL, 2, 0.0, ITEMS, HISTORY).tolist() == [0, 1]
    assert calibrated(REL, 2, 0.9, ITEMS, []).tolist() == [0, 1]
    assert calibrated(REL, 5, 0.5, ITEMS, HISTORY).tolist() == [0, 2, 1]  # k beyond the pool: all of it
