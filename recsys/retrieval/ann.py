"""Inner-product indexes over item embeddings, chosen by configuration: FAISS exact, HNSW or IVF, or the
norm-pruned exact scan (recsys/retrieval/pruned_index.py), which long-tailed learned norms make cheap."""

from __future__ import annotations

import faiss
import numpy as np

from recsys.retrieval import INDEX_KINDS
from recsys.retrieval.pruned_index import NormPrunedIndex


def build_index(vectors: np.ndarray, kind: str = "exact", *, hnsw_m: int = 32, ef_search: int = 128,
                nlist: int | None = None, nprobe: int = 16) -> faiss.Index | NormPrunedIndex:
    """An inner-product index over `vectors` (float32 [n, d])."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if kind == "pruned":
        pruned = NormPrunedIndex(d)
        pruned.add(vectors)
        return pruned
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(2 * hnsw_m, 64)
        index.hnsw.efSearch = ef_search
    else:
        nlist = nlist or max(1, min(4096, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(nprobe, nlist)
    index.add(vectors)
    return index


def search(index: faiss.Index | NormPrunedIndex, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n (ids, scores) for one query vector; ids of -1 (not enough results) are dropped."""
    n = min(n, index.ntotal)
    scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), n)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]
