"""Per-category caps on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ranking.category_caps import capped

CATS = [["A"], ["A", "B"], ["A"], ["B"], ["C"]]
REL = np.array([5.0, 4.0, 3.0, 2.0, 1.0])


def test_a_multi_category_item_counts_for_each_of_its_categories():
    assert capped(REL, 3, 1, CATS).tolist() == [0, 3, 4]   # 1 and 2 would be a second A
    assert capped(REL, 3, 2, CATS).tolist() == [0, 1, 3]   # 2 would be a third A


def test_the_best_skipped_items_fill_a_pool_that_runs_out():
    assert capped(REL, 4, 1, CATS).tolist() == [0, 3, 4, 1]


def test_a_bad_cap_is_an_error_naming_the_setting():
    with pytest.raises(ValueError, match="category_cap"):
        capped(REL, 3, 0, CATS)
