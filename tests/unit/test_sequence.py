import numpy as np
import pytest

from recsys.retrieval.sequence import sequence_neighbors


def test_adjacent_items_in_time_order_hand_computed():
    # user 0 consumes 0 -> 1 -> 2 (rows given out of time order), user 1 consumes 1 -> 2
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([2, 0, 1, 2, 1])
    ts = np.array([30, 10, 20, 9, 5])
    t = sequence_neighbors(users, items, ts, n_items=4, window=1).toarray()
    # adjacency counts: (0,1)=1, (1,2)=2; degrees: 0->1, 1->3, 2->2; weight = count / sqrt(deg_a * deg_b)
    assert t[0, 1] == pytest.approx(1 / np.sqrt(1 * 3))
    assert t[1, 2] == pytest.approx(2 / np.sqrt(3 * 2))
    assert t[0, 2] == 0  # two apart: not adjacent with window 1
    np.testing.assert_allclose(t, t.T)
    assert not t[3].any() and not np.diag(t).any()


def test_window_and_top_m():
    users = np.zeros(4, int)
    items = np.array([0, 1, 2, 3])
    ts = np.arange(4)
    wide = sequence_neighbors(users, items, ts, n_items=4, window=2)
    assert wide[0, 2] > 0 and wide[0, 3] == 0
    top1 = sequence_neighbors(users, items, ts, n_items=4, window=3, m=1)
    assert (np.diff(top1.indptr) <= 1).all()


def test_repeats_and_other_users_do_not_link():
    users = np.array([0, 0, 1])
    items = np.array([5, 5, 6])
    ts = np.array([1, 2, 3])
    t = sequence_neighbors(users, items, ts, n_items=7)
    assert t.nnz == 0  # a repeat is not adjacency to itself; users' sequences never join


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        sequence_neighbors(np.zeros(2, int), np.arange(2), np.arange(2), n_items=2, window=0)
