"""MovieLens importers (100K and the ml-latest CSV layout) into the canonical Dataset."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.canonical import Table, read_table, unique_ids
from recsys.data.schema import INTERACTION_COLUMNS, Dataset, DatasetError

# Bucket edges in years: the usual marketing age bands, so buckets are shared with the synthetic data.
AGE_BUCKETS: list[tuple[int, str]] = [
    (18, "0-17"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"), (10_000, "65+"),
]
_YEAR_AT_END = re.compile(r"(\d{4})\s*$")
_YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def age_bucket(ages: np.ndarray) -> np.ndarray:
    """Map ages to bucket labels like "18-24" (coarse buckets generalize better for cold start)."""
    edges = np.array([e for e, _ in AGE_BUCKETS])
    labels = np.array([lab for _, lab in AGE_BUCKETS], dtype=object)
    return labels[np.searchsorted(edges, ages, side="right")]


def _interactions(t: Table, user: str, item: str, rating: str, ts: str) -> pd.DataFrame:
    users, items = t.ids(user), t.ids(item)
    value = t.numbers(rating, allow_empty=False)
    stamps, missing = t.timestamps(ts)
    t.first_bad(missing, ts, lambda r: "empty timestamp")
    df = pd.DataFrame({
        "user_id": users.to_numpy(), "item_id": items.to_numpy(), "timestamp": stamps,
        "event": "rating", "value": value,
    })
    for c in ("user_id", "item_id", "event"):
        df[c] = df[c].astype("str")
    return df[INTERACTION_COLUMNS]


def _ml100k_root(path: str | Path) -> Path:
    root = Path(path)
    if not (root / "u.data").exists() and (root / "ml-100k" / "u.data").exists():
        root = root / "ml-100k"  # accept the parent of the unzipped archive too
    if not root.is_dir():
        raise DatasetError(str(root), "not a directory (expected the unzipped ml-100k folder)")
    return root


def load_movielens_100k(path: str | Path) -> Dataset:
    """MovieLens 100K: u.data ratings, u.item movies with genres and year, u.user demographics."""
    root = _ml100k_root(path)
    none = csv.QUOTE_NONE
    data = read_table(root / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"],
                      quoting=none, dtype={"rating": "float64", "timestamp": "int64"})
    interactions = _interactions(data, "user_id", "item_id", "rating", "timestamp")

    gt = read_table(root / "u.genre", sep="|", names=["genre", "index"], quoting=none, encoding="latin-1")
    gidx = gt.numbers("index", allow_empty=False)
    genres = [str(g) for g in gt.ids("genre").to_numpy()[np.argsort(gidx, kind="stable")]]

    base = ["item_id", "title", "release_date", "video_release_date", "url"]
    flag_cols = [f"genre:{g}" for g in genres]
    it = read_table(root / "u.item", sep="|", names=base + flag_cols, quoting=none, encoding="latin-1")
    item_ids = unique_ids(it, "item_id")
    flags = np.zeros((len(it.frame), len(genres)), dtype=bool)
    for j, c in enumerate(flag_cols):
        s = it.strings(c)
        it.first_bad(~s.isin(["0", "1"]).to_numpy(), genres[j], lambda r, s=s: f"genre flag must be 0 or 1, "
                                                                                 f"got {s.iloc[r]!r}")
        flags[:, j] = (s == "1").to_numpy()
    cats = []
    for row in flags:
        names = [genres[j] for j in np.flatnonzero(row)]
        if len(names) > 1 and "unknown" in names:
            names.remove("unknown")
        cats.append(names)
    release = it.strings("release_date")
    year_txt = release.str.extract(_YEAR_AT_END, expand=False)
    it.first_bad((year_txt.isna() & (release != "")).to_numpy(), "release_date",
                 lambda r: f"cannot read a year from release date {release.iloc[r]!r}")
    items = pd.DataFrame({
        "item_id": item_ids.to_numpy(), "title": it.strings("title").to_numpy(),
        "categories": pd.Series(cats, dtype=object).to_numpy(),
        "year": pd.to_numeric(year_txt, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan),
    })
    items["item_id"] = items["item_id"].astype("str")
    items["title"] = items["title"].astype("str")

    ut = read_table(root / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"],
                    quoting=none, encoding="latin-1")
    user_ids = unique_ids(ut, "user_id")
    age = ut.numbers("age", allow_empty=False)
    zips = ut.strings("zip")
    users = pd.DataFrame({
        "user_id": user_ids.to_numpy(),
        "age_bucket": age_bucket(age),
        "gender": ut.strings("gender").to_numpy(),
        "occupation": ut.strings("occupation").to_numpy(),
        # First character: a US region digit, or the province letter of the few Canadian postal codes.
        "zip_prefix": zips.str.slice(0, 1).str.upper().where(zips != "", "unknown").to_numpy(),
    }).astype("str")
    return Dataset(interactions=interactions, items=items, users=users, name="movielens-100k")


def load_movielens_latest(path: str | Path) -> Dataset:
    """MovieLens "latest"/25M/32M layout: ratings.csv and movies.csv (genres '|'-separated)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(str(root), "not a directory (expected a folder with ratings.csv and movies.csv)")
    rt = read_table(root / "ratings.csv", dtype={"rating": "float64", "timestamp": "int64"})
    rt.require(["userId", "movieId", "rating", "timestamp"])
    interactions = _interactions(rt, "userId", "movieId", "rating", "timestamp")
    items = None
    if (root / "movies.csv").exists():
        mt = read_table(root / "movies.csv")
        mt.require(["movieId", "title", "genres"])
        ids = unique_ids(mt, "movieId")
        titles = mt.strings("title")
        genres = mt.strings("genres")
        cats = [[] if g in ("", "(no genres listed)") else [p for p in g.split("|") if p] for g in genres]
        year = titles.str.extract(_YEAR_IN_TITLE, expand=False)
        items = pd.DataFrame({
            "item_id": ids.to_numpy(), "title": titles.to_numpy(),
            "categories": pd.Series(cats, dtype=object).to_numpy(),
            "year": pd.to_numeric(year, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan),
        })
        items["item_id"] = items["item_id"].astype("str")
        items["title"] = items["title"].astype("str")
    return Dataset(interactions=interactions, items=items, name=f"movielens-{root.resolve().name}")
