"""Stage-1 artifacts from interactions: the retrieval models (ALS embeddings and every configured candidate
source, see recsys/retrieval/sources/) and the feature tables the feature store serves. Built per training
run on the ranker's "history" parts (to generate its training lists) and on all data (to serve)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.data.schema import Dataset
from recsys.feature_tables import FeatureTables
from recsys.retrieval.als import train_als
from recsys.retrieval.artifacts import RetrievalArtifacts
from recsys.retrieval.content_map import fit_content_map
from recsys.retrieval.sources import source_class
from recsys.retrieval.sources.base import Catalog, TrainingData
from recsys.training.config import TrainConfig

USER_FEATURES = ["user_n_interactions", "user_n_items", "user_mean_value", "user_active_days",
                 "user_first_ts", "user_last_ts", "user_mean_ts", "user_activity_rel"]
ITEM_FEATURES = ["item_n_interactions", "item_n_users", "item_mean_value", "item_recent_share",
                 "item_age_days", "item_first_ts", "item_mean_ts", "item_popularity_rel"]
DAY = 86_400.0


@dataclass
class Vocab:
    """The id <-> index mapping of users and items for one training run."""

    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def of(cls, ds: Dataset) -> Vocab:
        users = pd.unique(ds.interactions["user_id"])
        if ds.users is not None:
            users = pd.unique(np.concatenate([users, ds.users["user_id"].to_numpy()]))
        items = pd.unique(ds.interactions["item_id"])
        if ds.items is not None:
            items = pd.unique(np.concatenate([items, ds.items["item_id"].to_numpy()]))
        return cls(np.sort(np.asarray(users, dtype=str)), np.sort(np.asarray(items, dtype=str)))

    def encode(self, inter: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        u = np.searchsorted(self.user_ids, inter["user_id"].to_numpy(dtype=str))
        i = np.searchsorted(self.item_ids, inter["item_id"].to_numpy(dtype=str))
        return u, i


def user_item_matrix(inter: pd.DataFrame, vocab: Vocab) -> sp.csr_matrix:
    """Binary users x items matrix (an interaction of any kind counts once)."""
    u, i = vocab.encode(inter)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(vocab.user_ids), len(vocab.item_ids)))
    m.data[:] = 1.0
    return m


def histories(inter: pd.DataFrame, vocab: Vocab) -> list[list[str]]:
    """Each user's distinct items, oldest first (a repeat moves the item to its latest position)."""
    df = inter[["user_id", "item_id", "timestamp"]].sort_values(["user_id", "timestamp"], kind="stable")
    df = df.drop_duplicates(["user_id", "item_id"], keep="last")
    out: list[list[str]] = [[] for _ in range(len(vocab.user_ids))]
    uidx = np.searchsorted(vocab.user_ids, df["user_id"].to_numpy(dtype=str))
    items = df["item_id"].to_numpy(dtype=str)
    bounds = np.flatnonzero(np.diff(uidx)) + 1
    for chunk_u, chunk_i in zip(np.split(uidx, bounds), np.split(items, bounds), strict=True):
        if len(chunk_u):
            out[int(chunk_u[0])] = chunk_i.tolist()
    return out


def _item_metadata(ds: Dataset, vocab: Vocab) -> tuple[list[list[str]], list[str], dict[str, np.ndarray]]:
    n = len(vocab.item_ids)
    cats: list[list[str]] = [[] for _ in range(n)]
    titles = [""] * n
    numeric: dict[str, np.ndarray] = {}
    if ds.items is not None and len(ds.items):
        items = ds.items.drop_duplicates("item_id")
        rows = np.searchsorted(vocab.item_ids, items["item_id"].to_numpy(dtype=str))
        if "categories" in items:
            for r, c in zip(rows.tolist(), items["categories"].tolist(), strict=True):
                cats[r] = [str(x) for x in c] if isinstance(c, list | tuple | np.ndarray) else (
                    [x for x in str(c).split("|") if x] if isinstance(c, str) else [])
        if "title" in items:
            for r, t in zip(rows.tolist(), items["title"].tolist(), strict=True):
                titles[r] = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
        for col in items.columns:
            if col in ("item_id", "title", "categories"):
                continue
            values = pd.to_numeric(items[col], errors="coerce")
            if values.notna().any():
                arr = np.full(n, np.nan, np.float32)
                arr[rows] = values.to_numpy(dtype=np.float32)
                numeric[f"item_{col}" if not str(col).startswith("item_") else str(col)] = arr
    return cats, titles, numeric


def build_feature_tables(ds: Dataset, vocab: Vocab, weights: np.ndarray) -> FeatureTables:
    inter = ds.interactions
    u, i = vocab.encode(inter)
    nu, ni = len(vocab.user_ids), len(vocab.item_ids)
    ts = inter["timestamp"].to_numpy(dtype=np.float64)
    t_end = float(ts.max()) if len(ts) else time.time()
    t_recent = t_end - 0.2 * (t_end - float(ts.min())) if len(ts) else t_end

    n_inter = np.bincount(u, minlength=nu).astype(np.float32)
    n_items = np.diff(user_item_matrix(inter, vocab).indptr).astype(np.float32)
    sum_w = np.bincount(u, weights=weights, minlength=nu)
    first = np.full(nu, np.inf)
    last = np.full(nu, -np.inf)
    np.minimum.at(first, u, ts)
    np.maximum.at(last, u, ts)
    active = np.where(n_inter > 0, (last - first) / DAY, 0.0)
    mean_ts = np.divide(np.bincount(u, weights=ts, minlength=nu), n_inter, out=np.full(nu, np.nan), where=n_inter > 0)
    user_values = np.stack([n_inter, n_items, np.divide(sum_w, n_inter, out=np.zeros(nu), where=n_inter > 0),
                            active, np.where(n_inter > 0, first, np.nan), np.where(n_inter > 0, last, np.nan),
                            mean_ts, n_inter / max(float(n_inter[n_inter > 0].mean()) if (n_inter > 0).any() else 1.0,
                                                   1e-9)], axis=1).astype(np.float64)

    i_inter = np.bincount(i, minlength=ni).astype(np.float32)
    i_users = np.diff(user_item_matrix(inter, vocab).tocsc().indptr).astype(np.float32)
    i_sum_w = np.bincount(i, weights=weights, minlength=ni)
    i_recent = np.bincount(i, weights=(ts >= t_recent).astype(np.float64), minlength=ni)
    i_first = np.full(ni, np.inf)
    np.minimum.at(i_first, i, ts)
    age = np.where(np.isfinite(i_first), (t_end - i_first) / DAY, np.nan)
    i_mean_ts = np.divide(np.bincount(i, weights=ts, minlength=ni), i_inter, out=np.full(ni, np.nan),
                          where=i_inter > 0)
    item_cols = [i_inter, i_users,
                 np.divide(i_sum_w, i_inter, out=np.full(ni, np.nan), where=i_inter > 0),
                 np.divide(i_recent, i_inter, out=np.full(ni, np.nan), where=i_inter > 0), age,
                 np.where(np.isfinite(i_first), i_first, np.nan), i_mean_ts,
                 i_inter / max(float(i_inter.sum()) / max(ni, 1), 1e-9)]  # popularity relative to the mean item
    cats, titles, numeric = _item_metadata(ds, vocab)
    names = ITEM_FEATURES + list(numeric)
    item_values = np.stack(item_cols + list(numeric.values()), axis=1).astype(np.float32)

    attrs: list[dict[str, str]] = [{} for _ in range(nu)]
    if ds.users is not None and len(ds.users):
        users = ds.users.drop_duplicates("user_id")
        rows = np.searchsorted(vocab.user_ids, users["user_id"].to_numpy(dtype=str))
        cols = [c for c in users.columns if c != "user_id"]
        for r, rec in zip(rows.tolist(), users[cols].astype(str).to_dict("records"), strict=True):
            attrs[r] = {k: v for k, v in rec.items() if v not in ("", "nan", "None")}
    return FeatureTables(
        user_ids=vocab.user_ids, user_feature_names=USER_FEATURES, user_values=user_values,
        user_history=histories(inter, vocab), user_attributes=attrs,
        item_ids=vocab.item_ids, item_feature_names=names, item_values=item_values,
        item_categories=cats, item_titles=titles, created_at=time.time())


def build_stage1(ds: Dataset, cfg: TrainConfig, vocab: Vocab | None = None, threads: int = 0,
                 content_map: bool = True) -> tuple[RetrievalArtifacts, FeatureTables, Vocab]:
    """Feature tables, the catalog (ALS embeddings, categories), each configured candidate source, and the
    content -> factor map that places items added at serving time (`content_map=False` skips it: the
    ranker's training folds never add items)."""
    vocab = vocab or Vocab.of(ds)
    tables = build_feature_tables(ds, vocab, ds.weights())
    x = user_item_matrix(ds.interactions, vocab)
    cat_names = sorted({c for cats in tables.item_categories for c in cats})
    cat_index = {c: j for j, c in enumerate(cat_names)}
    r = [i for i, cats in enumerate(tables.item_categories) for _ in cats]
    c = [cat_index[x_] for cats in tables.item_categories for x_ in cats]
    item_cats = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(vocab.item_ids), len(cat_names)))
    catalog = Catalog(item_ids=vocab.item_ids, item_factors=train_als(x, cfg.als, threads=threads),
                      item_categories=item_cats, category_names=cat_names)
    u, i = vocab.encode(ds.interactions)
    data = TrainingData(x=x, user_codes=u, item_codes=i, timestamps=ds.interactions["timestamp"].to_numpy(),
                        tables=tables, catalog=catalog, cfg=cfg)
    sources = [src for name in cfg.sources if (src := source_class(name).build(data)) is not None]
    quotas = {s.name: s.quota for s in sources} | {k: v for k, v in cfg.source_quotas.items()}
    cmap = fit_content_map(catalog, tables.item_titles, data.item_counts, cfg.cold_threshold,
                           seed=cfg.seed) if content_map else None
    return RetrievalArtifacts(catalog=catalog, sources=sources, quotas=quotas, content_map=cmap), tables, vocab
