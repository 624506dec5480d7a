"""Reserved places for items added since training (stages.reserve_fresh)."""

from __future__ import annotations

import numpy as np

from recsys.pipeline.stages import reserve_fresh
from recsys.pipeline.types import CandidateList


def _cands(n: int, fresh: list[int], als: list[float] | None = None) -> CandidateList:
    scores = np.array(als if als is not None else np.zeros(n), dtype=np.float32).reshape(n, 1)
    return CandidateList(item_ids=[f"i{k}" for k in range(n)], score_names=["als_score"], scores=scores,
                         source_masks=np.zeros(n, np.uint64), source_vocab=[], fresh_rows=np.array(fresh))


def test_no_fresh_items_changes_nothing() -> None:
    order = np.array([3, 1, 2])
    assert reserve_fresh(order, _cands(5, []), np.arange(5), 3, 0.1).tolist() == [3, 1, 2]


def test_the_best_fresh_candidate_takes_the_last_place() -> None:
    order = np.arange(10)
    als = [0.0] * 10 + [0.1, 0.9, 0.5]
    out = reserve_fresh(order, _cands(13, [10, 11, 12], als), np.arange(13), 10, 0.1)
    assert out.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 11]
    out = reserve_fresh(order, _cands(13, [10, 11, 12], als), np.arange(13), 10, 0.2)
    assert out.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 11, 12]


def test_fresh_items_already_shown_count_and_exclusions_hold() -> None:
    order = np.array([0, 10, 1, 2])
    out = reserve_fresh(order, _cands(13, [10, 11, 12]), np.arange(13), 4, 0.25)
    assert out.tolist() == [0, 10, 1, 2]
    keep = np.array([0, 1, 2, 3, 4, 12])  # 10 and 11 were excluded by the request
    out = reserve_fresh(np.array([0, 1, 2, 3]), _cands(13, [10, 11, 12]), keep, 4, 0.25)
    assert out.tolist() == [0, 1, 2, 12]


def test_short_lists_gain_the_fresh_item_instead_of_losing_one() -> None:
    out = reserve_fresh(np.array([0, 1]), _cands(4, [3]), np.arange(4), 5, 0.2)
    assert out.tolist() == [0, 1, 3]
