"""Standard cleaning of a Dataset before training, every step recorded in ds.notes for the bundle metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.schema import INTERACTION_COLUMNS, Dataset

_ITEM_RESERVED = ("item_id", "title", "categories")
HEAVY_USER_QUANTILE = 0.999
HEAVY_USER_FACTOR = 10.0


def _id_codes(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of an id column and a mask of missing ids (NaN/None or blank), checking each distinct
    value once rather than every row."""
    codes, uniques = pd.factorize(s)
    blank = (pd.Series(uniques).astype(str).str.strip() == "").to_numpy()
    missing = (codes < 0) | np.append(blank, True)[codes]  # code -1 picks the appended True
    return codes.astype(np.int64), missing


def _feature_columns(items: pd.DataFrame) -> list[str]:
    """Numeric item feature columns, excluding missing-value flags and booleans."""
    cols = []
    for c in items.columns:
        if c in _ITEM_RESERVED or str(c).endswith("_missing"):
            continue
        s = items[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            cols.append(c)
    return cols


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def clean(
    ds: Dataset, *, rating_range: tuple[float, float] | None = None, cap_quantile: float = 0.999
) -> Dataset:
    """Return a cleaned copy of ds; each step appends one line with its counts to the returned ds.notes.

    Steps, in order (interactions keep their original order):
    1. Drop interactions whose user_id or item_id is missing or blank: they cannot be attributed.
    2. Drop exact duplicate rows (same user, item, timestamp, event, value): logging double-writes.
    3. Impute missing timestamps with the median timestamp, so temporal splits and recency features still
       work; the note says how many were imputed (the interaction columns are a fixed contract, so the flag
       lives in the note rather than an extra column). With no timestamp at all, every one becomes 0: the
       data has no time order, which temporal_split and the sequence source detect and refuse.
    4. Ratings: drop rating events whose value is missing, and those outside rating_range (inclusive) when
       given; non-rating events with a missing value get the default strength 1.0 (a missing event type
       becomes "view", noted only when it happens).
    5. Repeated (user, item) ratings: keep only the latest (ties: the later row) because a re-rating replaces
       the old opinion. Other event types are all kept: repeated views/purchases are signal.
    6. Heavy users (more than 10x the 0.999 quantile of per-user activity) are only noted, not dropped: they
       may be bots, but silently deleting real power users is worse.
    7. Item numeric features: values above the cap_quantile quantile are capped (winsorized) so outliers do
       not dominate scaling; the quantile is an observed value (method "higher") so integer features stay
       integers; 0/1-like columns (<= 2 distinct values) are never capped.
    8. Item numeric features: missing values are imputed with the column median, with a `<col>_missing` 0/1
       column added so a model can still tell imputed from real values.
    """
    notes = list(ds.notes)
    df = ds.interactions.reset_index(drop=True)

    # 1. missing ids
    ucode, u_missing = _id_codes(df["user_id"])
    icode, i_missing = _id_codes(df["item_id"])
    bad_id = u_missing | i_missing
    df = df[~bad_id].reset_index(drop=True)
    ucode, icode = ucode[~bad_id], icode[~bad_id]
    notes.append(f"dropped {int(bad_id.sum())} interactions with a missing user_id or item_id")

    # 2. exact duplicates
    dup = df.duplicated(subset=INTERACTION_COLUMNS, keep="first").to_numpy()
    df = df[~dup].reset_index(drop=True)
    ucode, icode = ucode[~dup], icode[~dup]
    notes.append(f"dropped {int(dup.sum())} exact duplicate interactions")

    # 3. timestamps
    ts = pd.to_numeric(df["timestamp"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing_ts = np.isnan(ts)
    if missing_ts.all() and len(ts):
        ts[:] = 0.0
        notes.append(f"no interaction has a timestamp: set all {len(ts)} to 0 (the data has no time order; "
                     "temporal splits refuse it and the sequence source skips it)")
    elif missing_ts.any():
        median = float(np.floor(np.median(ts[~missing_ts])))
        ts[missing_ts] = median
        notes.append(f"imputed {int(missing_ts.sum())} missing timestamps with the median timestamp "
                     f"({int(median)})")
    else:
        notes.append("imputed 0 missing timestamps")
    df["timestamp"] = ts.astype(np.int64)

    # 4. rating values (and events: a missing event type is the weakest, a view)
    no_event = df["event"].isna().to_numpy() | (df["event"].astype(str).str.strip() == "").to_numpy()
    if no_event.any():
        df["event"] = df["event"].where(~no_event, "view")
        notes.append(f"set {int(no_event.sum())} missing event types to 'view'")
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    is_rating = (df["event"] == "rating").to_numpy()
    no_value = is_rating & ~np.isfinite(value)
    out_of_range = np.zeros(len(df), dtype=bool)
    if rating_range is not None:
        lo, hi = rating_range
        out_of_range = is_rating & np.isfinite(value) & ((value < lo) | (value > hi))
    value = np.where(~is_rating & ~np.isfinite(value), 1.0, value)
    df["value"] = value
    drop = no_value | out_of_range
    df = df[~drop].reset_index(drop=True)
    ucode, icode = ucode[~drop], icode[~drop]
    if rating_range is None:
        notes.append(f"dropped {int(no_value.sum())} ratings without a value (no rating range check)")
    else:
        notes.append(f"dropped {int(no_value.sum())} ratings without a value and {int(out_of_range.sum())} "
                     f"outside [{_fmt(rating_range[0])}, {_fmt(rating_range[1])}]")

    # 5. latest rating per (user, item)
    is_rating = (df["event"] == "rating").to_numpy()
    n_repeat = 0
    if is_rating.any():
        ridx = np.flatnonzero(is_rating)
        order = ridx[np.argsort(df["timestamp"].to_numpy()[ridx], kind="stable")]
        pair = ucode[order] * (int(icode.max()) + 1) + icode[order]
        older = pd.Series(pair).duplicated(keep="last").to_numpy()
        keep = np.ones(len(df), dtype=bool)
        keep[order[older]] = False
        n_repeat = int(older.sum())
        df = df[keep].reset_index(drop=True)
        ucode = ucode[keep]
    notes.append(f"dropped {n_repeat} older repeated ratings (kept the latest per user-item)")

    # 6. heavy users (noted only)
    counts = np.bincount(ucode)
    counts_present = counts[counts > 0]
    if len(counts_present):
        threshold = float(np.quantile(counts_present, HEAVY_USER_QUANTILE)) * HEAVY_USER_FACTOR
        heavy = np.flatnonzero(counts > threshold)
        top = ""
        if heavy.size:
            h = int(heavy[np.argmax(counts[heavy])])
            top = f"; top: {df['user_id'].iloc[int(np.argmax(ucode == h))]} with {int(counts[h])}"
        notes.append(f"{heavy.size} users with more than {_fmt(threshold)} interactions "
                     f"({_fmt(HEAVY_USER_FACTOR)}x the {HEAVY_USER_QUANTILE} activity quantile) kept{top}")

    df["user_id"] = df["user_id"].astype("str")
    df["item_id"] = df["item_id"].astype("str")
    df["event"] = df["event"].astype("str")
    df["value"] = df["value"].astype(np.float64)

    items = ds.items
    if items is not None:
        items, item_notes = _clean_items(items, cap_quantile)
        notes += item_notes
        unknown = ~df["item_id"].isin(items["item_id"]).to_numpy()
        if unknown.any():
            notes.append(f"{int(unknown.sum())} interactions refer to items not in the item table (kept)")

    return Dataset(
        interactions=df[INTERACTION_COLUMNS], items=items, users=ds.users, name=ds.name, notes=notes,
        social=ds.social,
    )


def _clean_items(items: pd.DataFrame, cap_quantile: float) -> tuple[pd.DataFrame, list[str]]:
    """Cap then impute numeric item features (steps 7 and 8 of clean)."""
    items = items.reset_index(drop=True).copy()
    cols = _feature_columns(items)
    capped, imputed = [], []
    for c in cols:
        v = items[c].to_numpy(dtype=np.float64, na_value=np.nan)
        obs = v[np.isfinite(v)]
        if obs.size and np.unique(obs).size > 2:
            cap = float(np.quantile(obs, cap_quantile, method="higher"))
            over = np.isfinite(v) & (v > cap)
            if over.any():
                v = np.where(over, cap, v)
                capped.append(f"{c}: {int(over.sum())} values > {_fmt(cap)}")
        miss = ~np.isfinite(v)
        if miss.any():
            median = float(np.median(v[~miss])) if (~miss).any() else 0.0
            v = np.where(miss, median, v)
            items[f"{c}_missing"] = miss.astype(np.int8)
            imputed.append(f"{c}: {int(miss.sum())} with {_fmt(median)}")
        items[c] = v
    notes = [
        f"capped item features at the {cap_quantile} quantile: " + ("; ".join(capped) if capped else "none"),
        "imputed missing item features with the column median (flag column <col>_missing): "
        + ("; ".join(imputed) if imputed else "none"),
    ]
    return items, notes
