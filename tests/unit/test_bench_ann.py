"""A tiny run of `make bench`'s ANN figure (recsys/bench_ann.py): real FAISS indexes, the measurement's shape
and sanity; the figures themselves belong to `make bench` at 1M items."""

from __future__ import annotations

import faiss
import numpy as np
from rich.console import Console

from recsys.bench_ann import HNSW_EF, IVF_NPROBE, ann_quality, item_vectors, print_ann, user_vectors


def test_synthetic_vectors_have_clusters_and_a_long_tailed_norm():
    items = item_vectors(5000, 16, clusters=10)
    assert items.shape == (5000, 16) and items.dtype == np.float32
    norms = np.linalg.norm(items, axis=1)
    assert norms.min() >= 0.5 - 1e-5 and np.percentile(norms, 99) > 2 * np.median(norms)  # popular items stand out
    users = user_vectors(items, 7)
    assert users.shape == (7, 16) and np.isfinite(users).all()


def test_the_ann_figure_compares_every_setting_against_exact_search_on_one_thread():
    threads = faiss.omp_get_max_threads()
    out = ann_quality(n=3000, d=16, queries=8, k=50)
    assert faiss.omp_get_max_threads() == threads  # restored after the single-thread searches
    rows = out["rows"]
    assert [r["index"] for r in rows] == ["exact", "pruned"] + ["hnsw"] * len(HNSW_EF) + ["ivf"] * len(IVF_NPROBE)
    assert rows[1]["recall"] >= 0.99 and 0 < rows[1]["read"] <= 1  # exact, up to ties at the k-th score
    assert rows[0]["recall"] == 1.0 and all(0.0 <= r["recall"] <= 1.0 for r in rows)
    hnsw = [r["recall"] for r in rows if r["index"] == "hnsw"]
    ivf = [r["recall"] for r in rows if r["index"] == "ivf"]
    assert hnsw[-1] >= hnsw[0] and ivf[-1] >= ivf[0]  # more search effort never finds less
    assert ivf[-1] > 0.9  # probing most of the 219 lists of 3,000 items is nearly exact
    assert all(r["p50_ms"] > 0 for r in rows) and out["hnsw_build_s"] >= 0
    best = out["fastest_at_0.95"]
    assert best is None or (best["recall"] >= 0.95 and best["index"] != "exact")
    print_ann(out, Console(width=120, record=True))


def test_the_figure_on_given_vectors_reads_few_rows_when_norms_are_skewed():
    """Learned factors (here: long-tailed norms like a bundle's) let the pruned scan read a fraction."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20_000, 16)).astype(np.float32)
    v *= (rng.lognormal(-3.0, 1.5, 20_000).astype(np.float32) / np.linalg.norm(v, axis=1))[:, None]
    out = ann_quality(queries=8, k=50, items=v, vectors="lognormal")
    pruned = out["rows"][1]
    assert out["items"] == 20_000 and out["dim"] == 16 and out["vectors"] == "lognormal"
    assert pruned["recall"] >= 0.99 and pruned["read"] < 0.25
