"""clean(): every step with exact counts, and the notes that record them."""

import time

import numpy as np
import pandas as pd

from recsys.data import Dataset, clean


def _dirty() -> Dataset:
    rows = [
        # user, item, timestamp, event, value
        ("u1", "i1", 100, "view", 1.0),
        ("u1", "i1", 100, "view", 1.0),  # exact duplicate -> dropped
        ("", "i2", 100, "view", 1.0),  # missing user -> dropped
        ("u2", None, 100, "view", 1.0),  # missing item -> dropped
        ("u1", "i2", None, "view", 1.0),  # missing timestamp -> median
        ("u2", "i3", 200, "rating", 4.0),  # older rating -> dropped
        ("u2", "i3", 300, "rating", 5.0),  # latest rating -> kept
        ("u2", "i3", 250, "rating", 3.0),  # older rating -> dropped
        ("u3", "i1", 150, "rating", 7.0),  # out of range -> dropped
        ("u3", "i2", 160, "rating", None),  # rating without value -> dropped
        ("u3", "i3", 170, "click", None),  # non-rating without value -> 1.0
        ("u1", "i3", 120, "view", 1.0),  # repeated non-rating events are all kept
        ("u1", "i3", 130, "view", 1.0),
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "value"])
    inter["timestamp"] = inter["timestamp"].astype("Int64")
    n = 5001
    price = np.arange(1, n + 1, dtype=float)
    price[-1] = 1e6  # an extreme value
    price[[3, 7]] = np.nan
    items = pd.DataFrame({
        "item_id": [f"i{k}" for k in range(1, n + 1)],
        "title": "t",
        "categories": [["c"]] * n,
        "price": price,
        "is_new": np.r_[np.ones(1), np.zeros(n - 1)],  # rare 1s must survive capping
    })
    return Dataset(interactions=inter, items=items, name="dirty", notes=["loaded"])


def test_clean_steps_exact_counts():
    ds = _dirty()
    before = ds.interactions.copy()
    out = clean(ds, rating_range=(1, 5))
    pd.testing.assert_frame_equal(ds.interactions, before)  # input untouched
    got = out.interactions
    assert list(got.columns) == ["user_id", "item_id", "timestamp", "event", "value"]
    assert got["timestamp"].dtype == np.int64 and got["value"].dtype == np.float64
    assert list(zip(got["user_id"], got["item_id"], got["timestamp"], got["event"], got["value"], strict=True)) == [
        ("u1", "i1", 100, "view", 1.0),
        ("u1", "i2", 160, "view", 1.0),  # median of the 9 remaining known timestamps
        ("u2", "i3", 300, "rating", 5.0),
        ("u3", "i3", 170, "click", 1.0),
        ("u1", "i3", 120, "view", 1.0),
        ("u1", "i3", 130, "view", 1.0),
    ]
    notes = out.notes
    assert notes[0] == "loaded"
    assert "dropped 2 interactions with a missing user_id or item_id" in notes
    assert "dropped 1 exact duplicate interactions" in notes
    assert "imputed 1 missing timestamps with the median timestamp (160)" in notes
    assert "dropped 1 ratings without a value and 1 outside [1, 5]" in notes
    assert "dropped 2 older repeated ratings (kept the latest per user-item)" in notes
    assert any(n.startswith("0 users with more than") for n in notes)


def test_clean_item_features():
    ds = _dirty()
    out = clean(ds).items
    price = ds.items["price"].to_numpy()
    observed = price[~np.isnan(price)]
    cap = np.quantile(observed, 0.999, method="higher")  # an observed value (4994th of 0..4998)
    n_over = int((observed > cap).sum())
    assert cap == 4997 and n_over == 4
    assert out["price"].max() == cap and (out["price"] == cap).sum() == n_over + 1  # 1e6 and co. capped
    assert out["price_missing"].tolist() == [1 if k in (3, 7) else 0 for k in range(len(price))]
    capped = np.minimum(observed, cap)
    assert out["price"].iloc[3] == np.median(capped) and out["price"].iloc[7] == np.median(capped)
    assert out["is_new"].sum() == 1 and "is_new_missing" not in out.columns
    notes = clean(ds).notes
    assert "capped item features at the 0.999 quantile: price: 4 values > 4997" in notes
    assert any("price: 2 with" in n for n in notes)
    assert not any("interactions refer to items" in n for n in notes)


def test_heavy_users_noted_not_dropped():
    users = [f"u{k}" for k in range(2000)] + ["bot"] * 5000
    inter = pd.DataFrame({
        "user_id": users, "item_id": [f"i{k % 50}" for k in range(len(users))],
        "timestamp": np.arange(len(users), dtype=np.int64), "event": "view", "value": 1.0,
    })
    out = clean(Dataset(interactions=inter))
    assert len(out.interactions) == len(inter)
    assert any(n.startswith("1 users with more than") and "bot with 5000" in n for n in out.notes)


def test_clean_is_fast_on_a_million_rows():
    n = 1_000_000
    rng = np.random.default_rng(0)
    inter = pd.DataFrame({
        "user_id": pd.array(np.char.add("u", rng.integers(0, 50_000, n).astype(str)), dtype="str"),
        "item_id": pd.array(np.char.add("i", rng.integers(0, 100_000, n).astype(str)), dtype="str"),
        "timestamp": rng.integers(0, 10_000_000, n),
        "event": pd.array(rng.choice(["view", "rating"], n), dtype="str"),
        "value": rng.integers(0, 7, n).astype(float),
    })
    t = time.perf_counter()
    out = clean(Dataset(interactions=inter), rating_range=(1, 5))
    assert time.perf_counter() - t < 10  # about 1-2 s; generous for loaded CI machines
    assert 0 < len(out.interactions) < n
