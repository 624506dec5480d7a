"""Canonical directory: round trip, parsing rules, and exact file:line:column errors for malformed files."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from recsys.data import Dataset, DatasetError, load_canonical, load_dataset, save_canonical

HEADER = "user_id,item_id,timestamp,event,value\n"


def _write(root, files: dict[str, str | bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (root / name).write_bytes(data)
    return root


def _small_dataset() -> Dataset:
    inter = pd.DataFrame({
        "user_id": ["u1", "u1", "u2", "u3"],
        "item_id": ["i1", "i2", "i1", "i3"],
        "timestamp": np.array([1_700_000_000, 1_700_000_100, 1_700_000_050, 1_600_000_000], dtype=np.int64),
        "event": ["view", "purchase", "rating", "click"],
        "value": [1.0, 1.0, 4.5, 1.0],
    })
    for c in ("user_id", "item_id", "event"):
        inter[c] = inter[c].astype("str")
    items = pd.DataFrame({
        "item_id": pd.array(["i1", "i2", "i3"], dtype="str"),
        "title": pd.array(['Toy, "Story"', "Multi\nline title", ""], dtype="str"),
        "categories": pd.Series([["Animation", "Comedy"], [], ["Drama"]], dtype=object).to_numpy(),
        "price": [9.99, np.nan, 0.1 + 0.2],
    })
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "country": ["US", "", "DE"]}).astype("str")
    return Dataset(interactions=inter, items=items, users=users, name="small")


def test_round_trip(tmp_path):
    ds = _small_dataset()
    save_canonical(ds, tmp_path / "small")
    back = load_canonical(tmp_path / "small")
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    assert back.items["categories"].tolist() == ds.items["categories"].tolist()
    pd.testing.assert_frame_equal(back.items.drop(columns="categories"), ds.items.drop(columns="categories"))
    pd.testing.assert_frame_equal(back.users, ds.users)
    assert back.name == "small"
    assert back.fingerprint() == ds.fingerprint()
    # a second round trip is byte-identical
    save_canonical(back, tmp_path / "again")
    for f in ("interactions.csv", "items.csv", "users.csv"):
        assert (tmp_path / "small" / f).read_bytes() == (tmp_path / "again" / f).read_bytes()


def test_parsing_rules(tmp_path):
    root = _write(tmp_path / "d", {
        "interactions.csv": (
            "user_id,item_id,timestamp,rating\n"
            " 7 ,42,2024-01-02T03:04:05Z,4\n"
            "\n"
            "7,43,1700000000,3.5\n"
            "8,42,2024-01-02 00:00:00+01:00,5\n"
        ),
        "items.csv": "item_id,title,categories,year,color\n42,A,Drama| Comedy |,1999,red\n43,B,,,blue\n",
    })
    ds = load_canonical(root)
    inter = ds.interactions
    assert inter["user_id"].tolist() == ["7", "7", "8"]
    assert inter["event"].tolist() == ["rating"] * 3  # default event when a rating column is present
    assert inter["value"].tolist() == [4.0, 3.5, 5.0]
    assert inter["timestamp"].tolist() == [
        int(pd.Timestamp("2024-01-02T03:04:05Z").timestamp()), 1_700_000_000,
        int(pd.Timestamp("2024-01-01T23:00:00Z").timestamp()),
    ]
    assert inter["timestamp"].dtype == np.int64
    assert ds.items["categories"].tolist() == [["Drama", "Comedy"], []]
    assert "color" not in ds.items.columns and np.isnan(ds.items["year"].iloc[1])
    assert any("color" in n for n in ds.notes)


def test_defaults_without_rating(tmp_path):
    root = _write(tmp_path / "d", {
        "interactions.csv": "user_id,item_id,timestamp,event,value\na,b,1,,\na,c,2,purchase,3\na,d,,click,\n",
    })
    ds = load_canonical(root)
    assert ds.interactions["event"].tolist() == ["view", "purchase", "click"]
    assert ds.interactions["value"].tolist() == [1.0, 3.0, 1.0]
    # an empty timestamp is missing (cleaning imputes it), not an error
    assert str(ds.interactions["timestamp"].dtype) == "Int64"
    assert ds.interactions["timestamp"].isna().tolist() == [False, False, True]
    assert any("1 interactions have no timestamp" in n for n in ds.notes)
    cleaned = load_dataset(str(root))
    assert cleaned.interactions["timestamp"].tolist() == [1, 2, 1]
    assert cleaned.interactions["timestamp"].dtype == np.int64


MALFORMED = [
    # (file, content, line, column)
    ("interactions.csv", "user_id,item_id\n1,2\n", 1, "timestamp"),
    ("interactions.csv", HEADER + "1,2,3,view,1\n1,2,yesterday,view,1\n", 3, "timestamp"),
    ("interactions.csv", HEADER + "1,2,3,view,1\n\n\n1,2,3,view,abc\n", 5, "value"),
    ("interactions.csv", "user_id,item_id,timestamp,rating\n1,2,3,4\n1,2,3,four\n", 3, "rating"),
    ("interactions.csv", "user_id,item_id,timestamp,rating\n1,2,3,4\n1,2,3,\n", 3, "rating"),
    ("interactions.csv", HEADER + "1,2,3,view,1\n  ,2,3,view,1\n", 3, "user_id"),
    ("interactions.csv", HEADER + "1,,3,view,1\n", 2, "item_id"),
    ("interactions.csv", HEADER + "1,2,3,view,1\n1,2,3,view\n", 3, None),  # too few fields
    ("interactions.csv", HEADER + "1,2,3,view,1,9\n1,2,3,view,1,9\n", 2, None),  # too many, every row
    ("interactions.csv", HEADER + '1,"a\nb",3,view,1\n1,2,3,view,1,extra\n', 4, None),  # quoted newline
    ("interactions.csv", HEADER + '1,2,3,view,1\n1,"2,3,view,1\n1,2,3,view,1\n', 3, None),  # open quote
    ("interactions.csv", HEADER.encode() + b"1,2,3,view,1\n1,\xff,3,view,1\n", 3, None),  # bad utf-8
    ("interactions.csv", HEADER + "1,2,99999999999999,view,1\n", 2, "timestamp"),
    ("interactions.csv", "", 1, None),
    ("interactions.csv", "user_id,user_id,timestamp\n", 1, "user_id"),
    ("items.csv", "item_id,title\ni1,a\ni2,b\ni1,c\n", 4, "item_id"),
    ("items.csv", "title\nx\n", 1, "item_id"),
    ("users.csv", "user_id,age\nu1,3\n,4\n", 3, "user_id"),
    ("users.csv", 'user_id,bio\nu1,"two\nlines"\nu2\n', 4, None),
]


@pytest.mark.parametrize(("name", "content", "line", "column"), MALFORMED)
def test_malformed_files(tmp_path, name, content, line, column):
    files = {"interactions.csv": HEADER + "1,2,3,view,1\n"}
    files[name] = content
    root = _write(tmp_path / "d", files)
    with pytest.raises(DatasetError) as info:
        load_canonical(root)
    err = info.value
    assert err.path.endswith(name) and name in str(err)
    assert err.line == line and f"{name}:{line}" in str(err)
    assert err.column == column
    if column is not None:
        assert repr(column) in str(err)


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_canonical(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="interactions.csv"):
        load_canonical(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such dataset directory"):
        load_dataset(str(tmp_path / "nope"))


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_needs_pyarrow(tmp_path):
    root = _write(tmp_path / "d", {"interactions.parquet": b"PAR1"})
    with pytest.raises(DatasetError, match="pyarrow") as info:
        load_canonical(root)
    assert "interactions.parquet" in str(info.value)


def test_large_file_error_line_is_exact(tmp_path):
    """The vectorized validators report the first bad row's physical line in a 200k-row file."""
    n = 200_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "user_id": rng.integers(0, 1000, n).astype(str), "item_id": rng.integers(0, 5000, n).astype(str),
        "timestamp": rng.integers(1_600_000_000, 1_700_000_000, n).astype(str),
    })
    df.loc[150_000, "timestamp"] = "not-a-time"
    df.loc[180_000, "timestamp"] = "also-bad"
    root = tmp_path / "big"
    root.mkdir()
    df.to_csv(root / "interactions.csv", index=False)
    with pytest.raises(DatasetError) as info:
        load_canonical(root)
    assert info.value.line == 150_002 and info.value.column == "timestamp"
    assert "2 bad rows in total" in str(info.value)
