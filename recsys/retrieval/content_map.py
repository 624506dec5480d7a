"""Content -> retrieval-space map: where an item nobody has interacted with yet belongs among the ALS factors.

An item's content features are its category multi-hot (the catalog's category names) and its title's
lower-cased words hashed into `buckets` columns (unit L2 norm per title, times a weight). At training time
a ridge regression from those features to the ALS item factors is fit on the items that have both (at least
`cold_threshold` distinct users, so their factors mean something, and some content); λ and the title weight
are chosen on a held-out 10% of those items, then the map is refit on all of them. At serving, a new item's
vector is the map applied to its title and categories, so the ALS source can retrieve it and a history
containing it folds in, without retraining.

    retrieval/content_map.npz   weights [C + buckets, f], intercept [f]
    retrieval/content_map.json  category names, buckets, title weight, λ, held-out R² and cosine

Bundles without these files (written before the map existed) get `CategoryMeans`: a new item's vector is the
mean of its categories' centroids over the trained items (the mean of all trained items without a known
category), so new items still reach the ALS source, more coarsely.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.sources.base import Catalog

BUCKETS = 4096
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
TITLE_WEIGHTS = (0.0, 1.0)   # 0 = categories alone: the title words only stay when they help on held-out items
HOLDOUT = 0.1
MIN_FIT_ITEMS = 20                # fewer items with factors and content: no map (CategoryMeans instead)
_WORD = re.compile(r"[^\W_]+")
MAP_FILE, META_FILE = "content_map.npz", "content_map.json"


class ItemVectorizer(Protocol):
    """Turns items' content (category rows against the catalog's names, titles) into retrieval vectors."""

    def vectors(self, categories: sp.csr_matrix, titles: Sequence[str]) -> np.ndarray: ...


def title_tokens(title: str) -> list[str]:
    """Lower-cased words (letters and digits; years in titles are words too)."""
    return _WORD.findall(title.lower())


def _bucket(token: str, buckets: int) -> int:
    # crc32, not hash(): Python salts str hashes per process, and training and serving must agree.
    return zlib.crc32(token.encode("utf-8")) % buckets


def title_matrix(titles: Sequence[str], buckets: int = BUCKETS) -> sp.csr_matrix:
    """Hashed word counts per title, each row scaled to unit L2 norm (empty titles stay zero)."""
    rows, cols = [], []
    for r, t in enumerate(titles):
        for tok in title_tokens(t or ""):
            rows.append(r)
            cols.append(_bucket(tok, buckets))
    m = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(titles), buckets))
    m.sum_duplicates()
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ m


def content_features(categories: sp.csr_matrix, titles: Sequence[str], title_weight: float,
                     buckets: int = BUCKETS) -> sp.csr_matrix:
    """[n, C + buckets]: category multi-hot, then the weighted hashed title words."""
    cats = sp.csr_matrix(categories, dtype=np.float64)
    cats.data[:] = 1.0
    return sp.hstack([cats, title_weight * title_matrix(titles, buckets)], format="csr")


def category_rows(names: Sequence[Sequence[str]], category_names: Sequence[str]) -> sp.csr_matrix:
    """Multi-hot rows over `category_names`; names not among them are ignored."""
    col = {c: j for j, c in enumerate(category_names)}
    pairs = sorted({(r, col[c]) for r, cats in enumerate(names) for c in cats if c in col})
    r = [p[0] for p in pairs]
    c = [p[1] for p in pairs]
    return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(names), len(category_names)))


@dataclass
class ContentMap:
    """A fitted linear map from content features to ALS item factors (with an unpenalised intercept)."""

    category_names: list[str]
    weights: np.ndarray               # float32 [C + buckets, f]
    intercept: np.ndarray             # float32 [f]
    title_weight: float
    buckets: int = BUCKETS
    info: dict[str, Any] = field(default_factory=dict)   # λ, held-out R² and cosine, items fit on

    def vectors(self, categories: sp.csr_matrix, titles: Sequence[str]) -> np.ndarray:
        x = content_features(categories, titles, self.title_weight, self.buckets)
        return np.asarray(x @ self.weights + self.intercept, dtype=np.float32)

    @property
    def metrics(self) -> dict[str, float]:
        """The numbers worth recording in the bundle's metrics (how well content predicts factors)."""
        return {f"content_map_{k}": float(v) for k, v in self.info.items() if isinstance(v, int | float)}

    def save(self, directory: Path) -> dict[str, Any]:
        np.savez(directory / MAP_FILE, weights=self.weights, intercept=self.intercept)
        meta = {"category_names": self.category_names, "title_weight": self.title_weight,
                "buckets": self.buckets, "info": self.info}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))
        return meta

    @classmethod
    def load(cls, directory: Path) -> ContentMap | None:
        """The bundle's map, or None for bundles written before it existed."""
        if not (directory / MAP_FILE).is_file():
            return None
        meta = json.loads((directory / META_FILE).read_text())
        with np.load(directory / MAP_FILE, allow_pickle=False) as z:
            weights, intercept = z["weights"], z["intercept"]
        return cls(list(meta["category_names"]), weights, intercept, float(meta["title_weight"]),
                   int(meta["buckets"]), dict(meta.get("info", {})))


@dataclass
class CategoryMeans:
    """The fallback for bundles without a content map: the mean of the centroids of the item's categories."""

    centroids: np.ndarray             # float32 [C, f]; rows of empty categories hold the global mean
    mean: np.ndarray                  # float32 [f]

    @classmethod
    def of(cls, catalog: Catalog) -> CategoryMeans:
        trained = catalog.n_items - catalog.added
        cats = sp.csr_matrix(catalog.item_categories[:trained], dtype=np.float64)
        factors = catalog.item_factors[:trained].astype(np.float64)
        mean = factors.mean(axis=0) if trained else np.zeros(factors.shape[1])
        sums = np.asarray(cats.T @ factors)
        counts = np.asarray(cats.sum(axis=0)).ravel()[:, None]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1.0), mean)
        return cls(centroids.astype(np.float32), mean.astype(np.float32))

    def vectors(self, categories: sp.csr_matrix, titles: Sequence[str]) -> np.ndarray:
        cats = sp.csr_matrix(categories, dtype=np.float64)
        counts = np.asarray(cats.sum(axis=1)).ravel()[:, None]
        summed = np.asarray(cats @ self.centroids.astype(np.float64))
        return np.where(counts > 0, summed / np.maximum(counts, 1.0), self.mean).astype(np.float32)


# -- fitting -------------------------------------------------------------------------------------------
def _ridge_path(x: sp.csr_matrix, y: np.ndarray, lambdas: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weights, intercept) of ridge regression y ≈ x W + b for each λ, b unpenalised. Solved in the n x n
    kernel form when there are fewer items than active features (the usual case: 4k hash buckets), else
    in the d x d Gram form over the active columns; a grid shares one symmetric eigendecomposition, a single
    λ is one direct solve."""
    n, d = x.shape
    mu_y = y.mean(axis=0)
    yc = y - mu_y
    active = np.flatnonzero(np.diff(x.tocsc().indptr))
    xa = x[:, active]
    mu_x = np.asarray(xa.mean(axis=0)).ravel()
    dual = n <= len(active)
    if dual:
        xm = xa @ mu_x
        a = (xa @ xa.T).toarray() - xm[:, None] - xm[None, :] + mu_x @ mu_x   # kernel of the centred features
        rhs = yc
    else:
        a = (xa.T @ xa).toarray() - n * np.outer(mu_x, mu_x)
        rhs = np.asarray(xa.T @ yc)
    if len(lambdas) == 1:
        sols = [np.linalg.solve(a + lambdas[0] * np.eye(len(a)), rhs)]
    else:
        s, u = np.linalg.eigh(a)
        uty = u.T @ rhs
        sols = [u @ (uty / (np.maximum(s, 0.0) + lam)[:, None]) for lam in lambdas]
    out = []
    for sol in sols:
        wa = np.asarray(xa.T @ sol) - np.outer(mu_x, sol.sum(axis=0)) if dual else sol
        w = np.zeros((d, y.shape[1]))
        w[active] = wa
        out.append((w, mu_y - mu_x @ wa))
    return out


def _r2_and_cosine(pred: np.ndarray, truth: np.ndarray, reference_mean: np.ndarray) -> tuple[float, float]:
    sse = float(((truth - pred) ** 2).sum())
    sst = float(((truth - reference_mean) ** 2).sum())
    num = (pred * truth).sum(axis=1)
    den = np.linalg.norm(pred, axis=1) * np.linalg.norm(truth, axis=1)
    cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return (1.0 - sse / sst if sst > 0 else 0.0), float(cos.mean())


def fit_content_map(catalog: Catalog, titles: Sequence[str], counts: np.ndarray, min_count: int, seed: int = 42,
                    lambdas: Sequence[float] = LAMBDAS, title_weights: Sequence[float] = TITLE_WEIGHTS,
                    buckets: int = BUCKETS) -> ContentMap | None:
    """Fit the map on items with >= `min_count` distinct users and some content; λ and the title weight are
    chosen by held-out R² on a random 10% of them (seed), then refit on all. None when too few items qualify
    (the bundle then serves `CategoryMeans`)."""
    cats = catalog.item_categories
    has_content = (np.diff(cats.indptr) > 0) | np.array([bool(title_tokens(t or "")) for t in titles])
    fit = np.flatnonzero((np.asarray(counts) >= min_count) & has_content)
    if len(fit) < MIN_FIT_ITEMS:
        return None
    y = catalog.item_factors[fit].astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(fit))
    n_val = max(1, int(round(HOLDOUT * len(fit))))
    val, tr = order[:n_val], order[n_val:]
    fit_titles = [titles[i] for i in fit]
    best: tuple[float, float, float, float] | None = None   # (R², cosine, λ, title weight)
    grid: dict[str, float] = {}
    for tw in title_weights:
        x = content_features(cats[fit], fit_titles, tw, buckets)
        for lam, (w, b) in zip(lambdas, _ridge_path(x[tr], y[tr], lambdas), strict=True):
            r2, cos = _r2_and_cosine(np.asarray(x[val] @ w) + b, y[val], y[tr].mean(axis=0))
            grid[f"title{tw:g}_lambda{lam:g}"] = round(r2, 4)
            if best is None or r2 > best[0]:
                best = (r2, cos, lam, tw)
    assert best is not None
    r2, cos, lam, tw = best
    w, b = _ridge_path(content_features(cats[fit], fit_titles, tw, buckets), y, [lam])[0]
    info = {"heldout_r2": round(r2, 4), "heldout_cosine": round(cos, 4), "lambda": lam,
            "title_weight": tw, "fit_items": int(len(fit)), "heldout_items": int(n_val), "grid_r2": grid}
    return ContentMap(list(catalog.category_names), w.astype(np.float32), b.astype(np.float32), tw, buckets, info)
