"""Miscalibration (Steck 2018 KL) and category coverage of a list, on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from recsys.ranking.metrics import category_coverage, miscalibration

HISTORY = [["a"], ["a"], ["b"], ["b"]]  # p = (1/2, 1/2)


def test_a_list_with_the_historys_mix_is_calibrated():
    assert miscalibration([["a"], ["b"]], HISTORY) == pytest.approx(0.0)
    assert miscalibration([["a", "b"]], HISTORY) == pytest.approx(0.0)  # one item splits its weight


def test_a_one_sided_list_by_hand():
    # q = (1, 0); q~ = (0.99 + 0.005, 0.005); KL = 1/2 ln(0.5/0.995) + 1/2 ln(0.5/0.005)
    want = 0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(100)
    assert miscalibration([["a"], ["a"]], HISTORY) == pytest.approx(want)
    assert want == pytest.approx(1.958518, abs=1e-6)


def test_uncategorized_items_dilute_the_list():
    # q = (1/3, 1/3); q~ = 0.99/3 + 0.005 = 0.335 on each; KL = ln(0.5 / 0.335)
    assert miscalibration([["a"], ["b"], []], HISTORY) == pytest.approx(math.log(0.5 / 0.335))


def test_categories_only_in_the_list_cost_nothing_but_their_place():
    # q = (1/2, 0, 1/2 on c); p has no c: KL over p's support = 1/2 ln(.5/.5) + 1/2 ln(.5/.005)
    assert miscalibration([["a"], ["c"]], HISTORY) == pytest.approx(0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(100))


def test_no_history_categories_means_no_value():
    assert miscalibration([["a"]], [[], []]) is None
    assert category_coverage([["a"]], []) is None


def test_category_coverage_by_hand():
    assert category_coverage([["a"], ["a", "c"]], [["a"], ["b"], ["c"]]) == pytest.approx(2 / 3)
    assert category_coverage([["z"]], [["a"]]) == 0.0
