"""The bench's ANN figure: recall@k of the approximate indexes against exact search, and their cost, at
catalog scale (issue 13: 1M items × 64 dimensions, recall@500 ≥ 0.95 at ≤ 1 ms per query).

The vectors are synthetic but shaped like learned item factors, not uniform noise (on which every
approximate index looks worse than it will on real embeddings): items in clusters (categories) with a
long-tailed norm (popularity), queries as users are folded in, the mean of a few items they liked, mostly
from one or two clusters. Each index is built with the parameters the services use
(recsys/retrieval/ann.py) and searched one query at a time, as a request does, on one thread (a request
never gets the machine's other cores). The same figure on a bundle's learned item factors
(`learned_factors`) shows what the served index meets: their norms are far more skewed than these, which
is what the norm-pruned exact scan (recsys/retrieval/pruned_index.py) feeds on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from recsys.retrieval.ann import build_index, search
from recsys.retrieval.pruned_index import NormPrunedIndex

# Search-time settings tried per kind: the service default first (efSearch 128, nprobe 16).
HNSW_EF = (128, 256, 512, 1024)
IVF_NPROBE = (16, 32, 64, 128)


def item_vectors(n: int, d: int, seed: int = 0, clusters: int = 200) -> np.ndarray:
    """float32 [n, d]: cluster centres plus noise, scaled by a long-tailed norm (popular items are longer)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    step = 100_000  # in slices: the noise of 1M × 64 at once would double the peak memory
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        which = rng.integers(0, clusters, hi - lo)
        v = centres[which] + 0.8 * rng.standard_normal((hi - lo, d)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[lo:hi] = v * (0.5 + rng.pareto(3.0, hi - lo).astype(np.float32))[:, None]
    return out


def learned_factors(bundle: Path) -> np.ndarray:
    """The item factors a bundle's ALS source learned (what the services index)."""
    return np.load(Path(bundle) / "retrieval" / "item_factors.npy").astype(np.float32)


def user_vectors(items: np.ndarray, n: int, seed: int = 1, liked: int = 20) -> np.ndarray:
    """float32 [n, d]: each the mean of `liked` items, drawn mostly near one item (a user's taste)."""
    rng = np.random.default_rng(seed)
    anchors = items[rng.integers(0, len(items), n)]
    out = np.empty((n, items.shape[1]), np.float32)
    sample = items[rng.integers(0, len(items), 20_000)]
    for i, a in enumerate(anchors):
        near = sample[np.argsort(-(sample @ a))[: liked // 2]]
        rand = items[rng.integers(0, len(items), liked - len(near))]
        out[i] = np.concatenate([near, rand]).mean(axis=0)
    return out


def _timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, _ = search(index, q, k)
        times.append(time.perf_counter() - t0)
        found.append(ids)
    return found, np.array(times)


def _recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / min(k, len(t)) for f, t in zip(found, truth,
                                                                                              strict=True)]))


def ann_quality(n: int = 1_000_000, d: int = 64, queries: int = 200, k: int = 500,
                console: Console | None = None, items: np.ndarray | None = None,
                vectors: str = "synthetic") -> dict[str, Any]:
    """Recall@k and per-query latency of HNSW and IVF (at several search settings) and of the norm-pruned
    exact scan against exact search, with build times. `items`: vectors to index instead of synthetic ones
    (a bundle's learned item factors, named by `vectors`)."""
    threads = faiss.omp_get_max_threads()
    status = console.status if console is not None else None
    items = item_vectors(n, d) if items is None else np.ascontiguousarray(items, dtype=np.float32)
    n, d = items.shape
    out: dict[str, Any] = {"items": n, "dim": d, "queries": queries, "k": k, "build_threads": threads,
                           "vectors": vectors, "rows": []}
    qs = user_vectors(items, queries)
    indexes: dict[str, Any] = {}
    for kind in ("exact", "pruned", "hnsw", "ivf"):
        t0 = time.perf_counter()
        if status is not None:
            with status(f"ANN bench: building the {kind} index over {n:,} × {d}"):
                indexes[kind] = build_index(items, kind)
        else:
            indexes[kind] = build_index(items, kind)
        out[f"{kind}_build_s"] = round(time.perf_counter() - t0, 2)
    faiss.omp_set_num_threads(1)  # searched as a request searches: one query on one thread
    try:
        truth, t = _timed_search(indexes["exact"], qs, k)
        out["rows"].append({"index": "exact", "param": "", "recall": 1.0, **_ms(t)})
        pruned: NormPrunedIndex = indexes["pruned"]
        found, t = _timed_search(pruned, qs, k)
        read = float(np.mean([pruned.rows_read(q, k) for q in qs])) / n
        out["rows"].append({"index": "pruned", "param": f"read {read:.1%}", "read": round(read, 4),
                            "recall": round(_recall(found, truth, k), 4), **_ms(t)})
        for kind, attr, values in (("hnsw", "efSearch", HNSW_EF), ("ivf", "nprobe", IVF_NPROBE)):
            index = indexes[kind]
            for v in values:
                if kind == "hnsw":
                    index.hnsw.efSearch = v
                else:
                    index.nprobe = v
                found, t = _timed_search(index, qs, k)
                out["rows"].append({"index": kind, "param": f"{attr}={v}", "recall": round(_recall(found, truth, k), 4),
                                    **_ms(t)})
    finally:
        faiss.omp_set_num_threads(threads)
    best = [r for r in out["rows"] if r["index"] != "exact" and r["recall"] >= 0.95]
    out["fastest_at_0.95"] = min(best, key=lambda r: r["p50_ms"]) if best else None
    return out


def _ms(times: np.ndarray) -> dict[str, float]:
    ms = times * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def print_ann(result: dict[str, Any], console: Console) -> None:
    t = Table(title=f"ANN: recall@{result['k']} against exact search, {result['items']:,} items × {result['dim']} "
                    f"({result.get('vectors', 'synthetic')} vectors), {result['queries']} queries, one thread")
    for col in ("index", "setting", f"recall@{result['k']}", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        t.add_row(r["index"], r["param"], f"{r['recall']:.4f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}")
    console.print(t)
    kinds = ("exact", "pruned", "hnsw", "ivf")
    console.print("build: " + ", ".join(f"{k} {result[f'{k}_build_s']:.1f} s" for k in kinds)
                  + f" ({result['build_threads']} threads)", highlight=False)
