"""Dense EASE's memory rule (run when its items² matrix fits a budget, else skip saying why) and its
in-place Cholesky inversion, on tiny matrices."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.cli import build_parser
from recsys.evaluation import baselines


def _data() -> baselines.Interactions:
    rows = [("u1", "a"), ("u1", "b"), ("u2", "c"), ("u3", "a"), ("u3", "c"), ("u3", "d")]
    return baselines.Interactions(pd.DataFrame(rows, columns=["user_id", "item_id"]), ["a", "b", "c", "d"])


def _reference_ease(x: sp.csr_matrix, reg: float) -> np.ndarray:
    g = (x.T @ x).toarray().astype(np.float64) + reg * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_memory_is_the_dense_matrix_plus_the_sparse_gram_bound():
    x = _data().matrix  # users hold 2, 1 and 3 items of 4: XᵀX has at most 4 + 1 + 9 = 14 of 16 entries
    assert baselines.ease_memory_bytes(x, np.dtype(np.float32)) == 16 * 4 + 14 * (4 + 8)
    assert baselines.ease_memory_bytes(x, np.dtype(np.float64)) == 16 * 8 + 14 * (8 + 8)
    wide = sp.csr_matrix(np.ones((5, 3), dtype=np.float32))  # 5 × 3² co-occurrences, but only 3² entries
    assert baselines.ease_memory_bytes(wide, np.dtype(np.float64)) == 9 * 8 + 9 * 16


def test_the_default_budget_is_a_share_of_available_memory(monkeypatch):
    monkeypatch.setattr(baselines, "available_memory", lambda: 8_000_000_000)
    budget, source = baselines.ease_budget()
    assert budget == int(baselines.EASE_MEMORY_FRACTION * 8e9)
    assert "of 8.0 GB available" in source
    assert baselines.ease_budget(1.5) == (1_500_000_000, "--ease-memory-gb")
    monkeypatch.setattr(baselines, "available_memory", lambda: None)
    assert baselines.ease_budget()[0] == 0


def test_available_memory_is_read():
    avail = baselines.available_memory()
    assert avail is None or avail > 0


def test_ease_is_skipped_over_budget_with_what_it_needs():
    data = _data()
    need = baselines.ease_memory_bytes(data.matrix)
    score, note = baselines.fit_ease(data, reg=1.0, budget_gb=(need - 1) / baselines.GB)
    assert score is None
    assert note.startswith("ease skipped: 4 items in float32 need") and "--ease-memory-gb" in note
    score, note = baselines.fit_ease(data, reg=1.0, budget_gb=0)  # 0 turns it off
    assert score is None and "budget of 0.00 GB" in note


def test_ease_runs_within_budget_and_matches_a_plain_inverse():
    data = _data()
    score, note = baselines.fit_ease(data, reg=1.0, budget_gb=baselines.ease_memory_bytes(data.matrix) / baselines.GB)
    assert score is not None and note.startswith("ease: λ = 1; 4 items in float32")
    x = data.matrix[[0, 2]]
    np.testing.assert_allclose(score(x), x @ _reference_ease(data.matrix, 1.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spd_inverse_is_written_over_its_input_across_blocks(dtype):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((50, 37))
    a = (m.T @ m + 5 * np.eye(37)).astype(dtype)
    expected = np.linalg.inv(a.astype(np.float64))
    out = baselines._spd_inverse_in_place(a, block=8)  # 37 = 4 full blocks and a partial one
    assert out is a and out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-7)
    np.testing.assert_array_equal(out, out.T)


def test_ease_weights_in_float32_and_float64_agree_with_the_reference():
    x = sp.random(80, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    ref = _reference_ease(x, 10.0)
    np.testing.assert_allclose(baselines.ease_weights(x, 10.0, np.dtype(np.float64)), ref, atol=1e-12)
    b32 = baselines.ease_weights(x, 10.0, np.dtype(np.float32))
    assert b32.dtype == np.float32
    np.testing.assert_allclose(b32, ref, atol=1e-5)


def test_eval_takes_a_memory_budget():
    parser = build_parser()
    assert parser.parse_args(["eval", "--dataset", "d"]).ease_memory_gb is None
    assert parser.parse_args(["eval", "--dataset", "d", "--ease-memory-gb", "3.5"]).ease_memory_gb == 3.5
