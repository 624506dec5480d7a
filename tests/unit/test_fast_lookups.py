"""The request path's array and id helpers give exactly what the plain numpy and dict versions give."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import recsys.id_index as id_index
from recsys.arrays import unique_ints
from recsys.id_index import IdIndex
from recsys.ranking.calibrated import calibrated, category_distributions, category_vocab
from recsys.retrieval.sources.base import row_entries, rows_dot, rows_sum

PROPS = settings(max_examples=200, deadline=None, derandomize=True)


@PROPS
@given(st.lists(st.integers(-(2 ** 40), 2 ** 40), max_size=300))
def test_unique_ints_is_np_unique(values):
    a = np.array(values, dtype=np.int64)
    got, want = unique_ints(a), np.unique(a)
    assert got.dtype == want.dtype and got.tolist() == want.tolist()


IDS = st.text(alphabet="ab1é\x00", max_size=4)


@PROPS
@given(st.lists(IDS, unique=True, max_size=60), st.lists(IDS, max_size=60))
def test_rows_are_the_dicts_rows(known, asked):
    rows = np.arange(len(known))[::-1] * 3  # rows need not be positions
    want = dict(zip(known, rows.tolist(), strict=True))
    got = IdIndex(known, rows).rows(asked)
    assert got.tolist() == [want.get(x, -1) for x in asked]


def test_clashing_hashes_are_told_apart_by_the_ids(monkeypatch):
    monkeypatch.setattr(id_index, "_hash", lambda s: len(s))  # "a", "b" and "c" share a hash and a probe run
    index = IdIndex(["a", "b", "cc", "c"])
    assert index.rows(["b", "a", "cc", "zz", "c", "d"]).tolist() == [1, 0, 2, -1, 3, -1]


def test_an_unknown_id_with_a_known_hash_is_not_found(monkeypatch):
    monkeypatch.setattr(id_index, "_hash", lambda s: 7)
    assert IdIndex(["a"]).rows(["a", "b"]).tolist() == [0, -1]


@PROPS
@given(st.lists(IDS, unique=True, max_size=80), st.lists(IDS, max_size=40), st.booleans())
def test_added_ids_are_found_as_if_built_with_them(known, asked, clash):
    id_index._hash = len if clash else hash  # clash: ids of one length share a hash
    try:
        index = IdIndex(known[:3])
        for j, x in enumerate(known[3:], start=3):
            index.add(x, 10 * j)  # grows the table several times
        want = {x: (j if j < 3 else 10 * j) for j, x in enumerate(known)}
        assert len(index) == len(known)
        assert index.rows(asked + known).tolist() == [want.get(x, -1) for x in asked + known]
    finally:
        id_index._hash = hash


def test_empty_index_and_empty_batch():
    assert IdIndex([]).rows(["a"]).tolist() == [-1]
    assert IdIndex(["a"]).rows([]).tolist() == []


def _distributions_per_item(categories, vocab):
    """The per-item loop category_distributions replaced."""
    out = np.zeros((len(categories), len(vocab)))
    for i, cats in enumerate(categories):
        cols = [vocab[c] for c in dict.fromkeys(cats) if c in vocab]
        if cats:
            out[i, cols] = 1.0 / len(set(cats))
    return out


CATS = st.lists(st.lists(st.sampled_from("ABCDEFG"), max_size=4), max_size=40)


@PROPS
@given(CATS, CATS, st.sets(st.sampled_from("ABCDEFG")))
def test_distributions_match_the_per_item_loop(items, history, dropped):
    vocab = category_vocab(history, items)
    assert list(vocab) == list(dict.fromkeys(c for cats in (*history, *items) for c in cats))
    np.testing.assert_array_equal(category_distributions(items, vocab), _distributions_per_item(items, vocab))
    partial = {c: j for j, c in enumerate(c for c in vocab if c not in dropped)}  # categories outside the vocab
    np.testing.assert_array_equal(category_distributions(items, partial), _distributions_per_item(items, partial))


def _calibrated_reference(relevance, k, lam, item_categories, history_categories, alpha=0.01):
    """calibrated as it was written first: a loop per item and the whole distributions at each step."""
    from tests.unit.test_calibrated import _kl

    n = len(relevance)
    k = min(k, n)
    order = np.argsort(-relevance, kind="stable")
    vocab: dict[str, int] = {}
    for cats in (*history_categories, *item_categories):
        for c in cats:
            vocab.setdefault(c, len(vocab))
    hist = _distributions_per_item(history_categories, vocab)
    if lam <= 0.0 or not hist.any() or k <= 0:
        return order[:k]
    p = hist.sum(axis=0) / len(history_categories)
    p = p / p.sum()
    items = _distributions_per_item(item_categories, vocab)
    rel = np.asarray(relevance, dtype=np.float64)
    mass = np.zeros(len(vocab))
    available = np.ones(n, dtype=bool)
    chosen = []
    for step in range(k):
        gain = (1.0 - lam) * rel - lam * _kl(p, (mass[None, :] + items) / (step + 1), alpha)
        gain[~available] = -np.inf
        nxt = int(order[np.argmax(gain[order])])
        chosen.append(nxt)
        available[nxt] = False
        mass += items[nxt]
    return np.array(chosen, dtype=np.int64)


def test_calibrated_picks_what_the_first_version_picked():
    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(1, 300))
        cats = [[f"c{j}" for j in rng.choice(20, rng.integers(0, 4))] for _ in range(n)]  # repeats, empty lists
        hist = [[f"c{j}" for j in rng.choice(8, rng.integers(0, 3))] for _ in range(int(rng.integers(0, 40)))]
        rel = rng.random(n).round(1 if case % 3 == 0 else 6)  # ties too
        lam, k = float(rng.choice([0.0, 0.2, 0.5, 0.9, 1.0])), int(rng.integers(0, 15))
        assert calibrated(rel, k, lam, cats, hist).tolist() == _calibrated_reference(rel, k, lam, cats, hist).tolist()


@PROPS
@given(st.integers(1, 30), st.integers(1, 40), st.floats(0.0, 0.5), st.lists(st.integers(0, 29), max_size=50),
       st.integers(0, 2 ** 32 - 1))
def test_row_entries_are_the_rows_scipy_gathers(n_rows, n_cols, density, rows, seed):
    table = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=seed)
    rows = np.array([r % n_rows for r in rows], dtype=np.int64)
    indices, data = row_entries(table, rows)
    want = table[rows]
    assert indices.tolist() == want.indices.tolist() and data.tolist() == want.data.tolist()


@PROPS
@given(st.integers(1, 30), st.integers(1, 40), st.floats(0.0, 0.9), st.lists(st.integers(0, 29), max_size=60),
       st.integers(0, 2 ** 32 - 1))
def test_row_sums_and_products_are_scipys_to_the_bit(n_rows, n_cols, density, rows, seed):
    rng = np.random.default_rng(seed)
    table = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=seed)
    table.data = (rng.random(len(table.data)) * 3).astype(np.float32)  # weights, not ones: rounding shows
    rows = np.array([r % n_rows for r in rows], dtype=np.int64)
    want_sum = np.asarray(table[rows].sum(axis=0), dtype=np.float32).ravel()
    assert rows_sum(table, rows).tobytes() == want_sum.tobytes()
    vector = (rng.random(n_cols) / 7).astype(np.float32)
    want_dot = table[rows] @ vector
    got = rows_dot(table, rows, vector)
    assert got.dtype == want_dot.dtype and got.tobytes() == want_dot.tobytes()
