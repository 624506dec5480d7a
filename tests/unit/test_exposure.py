"""Exposure-aware re-ranking on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.ranking.exposure import exposure_rerank, longtail_scores

REL = np.array([1.0, 0.5, 0.0])
POP = np.array([math.e ** 2 - 1, math.e - 1, 0.0])   # log1p: 2, 1, 0


def test_longtail_is_one_minus_scaled_log_popularity():
    assert longtail_scores(POP) == pytest.approx([0.0, 0.5, 1.0])
    assert longtail_scores(np.array([3.0, 3.0])).tolist() == [0.0, 0.0]
    assert longtail_scores(np.array([np.nan, math.e - 1])) == pytest.approx([1.0, 0.0])


def test_beta_trades_relevance_for_the_long_tail():
    assert exposure_rerank(REL, 3, 0.4, POP).tolist() == [0, 1, 2]   # 0.6, 0.5, 0.4
    assert exposure_rerank(REL, 3, 0.5, POP).tolist() == [0, 1, 2]   # all 0.5: relevance order
    assert exposure_rerank(REL, 2, 0.6, POP).tolist() == [2, 1]      # 0.4, 0.5, 0.6
    assert exposure_rerank(REL, 2, 0.0, POP).tolist() == [0, 1]


def test_a_bad_beta_is_an_error_naming_the_setting():
    with pytest.raises(ValueError, match="longtail_beta"):
        exposure_rerank(REL, 2, 1.5, POP)
