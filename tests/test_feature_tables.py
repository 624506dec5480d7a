"""FeatureTables save/load: exact round trip, compact CSR histories, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.feature_tables import FeatureTables


def make_tables() -> FeatureTables:
    return FeatureTables(
        user_ids=np.array(["u1", "üser-2", "用户3", "empty"]),
        user_feature_names=["user_age", "user_n_interactions"],
        user_values=np.array([[30, 1], [40, 2], [50, 3], [0, 0]], dtype=np.float32),
        user_history=[["i1", "i2"], ["ítem-ñ", "i1", "ghost-item"], [], []],
        user_attributes=[{"country": "DE"}, {"città": "Zürich ☃"}, {}, {}],
        item_ids=np.array(["i1", "i2", "ítem-ñ"]),
        item_feature_names=["item_price"],
        item_values=np.array([[1.5], [2.25], [np.float32(1e-7)]], dtype=np.float32),
        item_categories=[["books", "sci-fi"], [], ["音楽"]],
        item_titles=["Dune", "", "Canción \"quoted\"\nnewline"],
        created_at=1_712_345_678.25,
    )


def assert_same(a: FeatureTables, b: FeatureTables) -> None:
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert a.user_feature_names == b.user_feature_names
    assert a.item_feature_names == b.item_feature_names
    np.testing.assert_array_equal(a.user_values, b.user_values)
    np.testing.assert_array_equal(a.item_values, b.item_values)
    assert a.user_history == b.user_history
    assert a.user_attributes == b.user_attributes
    assert a.item_categories == b.item_categories
    assert a.item_titles == b.item_titles
    assert a.created_at == b.created_at


def test_round_trip_with_unicode_and_empty_histories(tmp_path: Path) -> None:
    tables = make_tables()
    tables.save(tmp_path / "tables")
    loaded = FeatureTables.load(tmp_path / "tables")
    assert_same(tables, loaded)
    assert loaded.user_values.dtype == np.float32 and loaded.item_values.dtype == np.float32
    assert loaded.user_history[2] == [] and loaded.user_history[3] == []


def test_histories_are_stored_as_csr_with_int32_indices(tmp_path: Path) -> None:
    make_tables().save(tmp_path)
    indptr = np.load(tmp_path / "user_history_indptr.npy")
    indices = np.load(tmp_path / "user_history_indices.npy")
    assert indptr.tolist() == [0, 2, 5, 5, 5]
    assert indices.dtype == np.int32
    # items outside the catalogue get indices past the end, into users.json's extra list
    assert indices.tolist() == [0, 1, 2, 0, 3]
    users = json.loads((tmp_path / "users.json").read_text(encoding="utf-8"))
    assert users["history_extra_item_ids"] == ["ghost-item"]


def test_empty_tables_round_trip(tmp_path: Path) -> None:
    empty = FeatureTables([], ["f"], [], [], [], [], [], [], [], [])
    assert empty.user_values.shape == (0, 1) and empty.item_values.shape == (0, 0)
    empty.save(tmp_path)
    assert_same(empty, FeatureTables.load(tmp_path))


def test_overwrite_replaces_previous_save(tmp_path: Path) -> None:
    make_tables().save(tmp_path)
    smaller = FeatureTables(["x"], [], np.zeros((1, 0)), [["y"]], [{}], [], [], np.zeros((0, 0)), [], [])
    smaller.save(tmp_path)
    assert_same(smaller, FeatureTables.load(tmp_path))


def test_load_rejects_incomplete_directory(tmp_path: Path) -> None:
    make_tables().save(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(ValueError, match="meta.json"):
        FeatureTables.load(tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("user_values", np.zeros((4, 3), np.float32), "user_values"),
    ("item_titles", ["a"], "item_titles"),
    ("item_ids", np.array(["i1", "i1", "i2"]), "duplicate id 'i1'"),
    ("user_feature_names", ["a", "a"], "duplicate names"),
])
def test_inconsistent_tables_are_rejected(field: str, value: object, message: str) -> None:
    kwargs = {name: getattr(make_tables(), name) for name in FeatureTables.__dataclass_fields__}
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        FeatureTables(**kwargs)


def test_numpy_and_non_str_values_are_stored_as_strings(tmp_path: Path) -> None:
    """Tables assembled from DataFrames carry numpy arrays and scalars; they must load back as str."""
    tables = make_tables()
    tables.item_categories = [np.array(["books", "sci-fi"]), [], [np.str_("音楽")]]
    tables.user_attributes = [{"age_bucket": 3}, {}, {}, {"vip": True}]
    tables.save(tmp_path)
    loaded = FeatureTables.load(tmp_path)
    assert loaded.item_categories == [["books", "sci-fi"], [], ["音楽"]]
    assert loaded.user_attributes == [{"age_bucket": "3"}, {}, {}, {"vip": "True"}]
