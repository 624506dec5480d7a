"""The FeatureStorage contract for forgetting users (issue 11, item 10), against every backend."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.storage import Event, FeatureStorage
from recsys.storage.base import Erased

from .test_storage_contract import make_tables, storage  # noqa: F401  (the backend fixture)


@pytest.fixture
def loaded(storage: FeatureStorage) -> FeatureStorage:  # noqa: F811
    storage.load(make_tables())
    return storage


def test_forget_erases_record_history_and_attributes_and_only_them(loaded: FeatureStorage) -> None:
    t = make_tables()
    loaded.record_events([Event("ü-sér 🚀", "i5", "click", event_id="e1")])
    erased = loaded.forget_users(["ü-sér 🚀", "nobody", "ü-sér 🚀"])
    assert erased == Erased(records=1, history_items=4)  # three trained items and the event's
    assert loaded.get_users(["ü-sér 🚀", "u1", "u2"])[0] is None
    u1 = loaded.get_users(["u1"])[0]
    assert u1 is not None and u1.history == t.user_history[0] and u1.attributes == t.user_attributes[0]
    np.testing.assert_array_equal(u1.values, t.user_values[0])
    assert loaded.forget_users(["ü-sér 🚀"]) == Erased()  # repeating it changes nothing
    assert loaded.forget_users([]) == Erased()


def test_a_forgotten_user_who_comes_back_starts_from_zero(loaded: FeatureStorage) -> None:
    loaded.forget_users(["u1"])
    assert loaded.record_events([Event("u1", "i3", "view", event_id="after")]) == 1
    back = loaded.get_users(["u1"])[0]
    assert back is not None and back.history == ["i3"] and back.attributes == {}
    assert back.values[loaded.user_feature_names.index("user_n_interactions")] == 1.0
    assert back.values[loaded.user_feature_names.index("user_age")] == 0.0  # the trained value is gone
    loaded.upsert_users([("u2", {"tier": "new"})])
    loaded.forget_users(["u2"])
    loaded.upsert_users([("u2", {"country": "FR"})])
    again = loaded.get_users(["u2"])[0]
    assert again is not None and again.attributes == {"country": "FR"}


def test_forgetting_never_disturbs_other_users_added_later(loaded: FeatureStorage) -> None:
    """The embedded store leaves a forgotten row unindexed: new users must never reuse or alias it."""
    loaded.forget_users(["u1", "u2"])
    loaded.record_events([Event(f"n{k}", "i1", event_id=f"n{k}") for k in range(6)])
    users = loaded.get_users([f"n{k}" for k in range(6)] + ["ü-sér 🚀"])
    assert all(u is not None and u.history == ["i1"] for u in users[:6])
    assert users[6] is not None and users[6].history == ["i3", "i1", "i4"]


def test_forget_on_an_empty_store_is_a_no_op(storage: FeatureStorage) -> None:  # noqa: F811
    assert storage.forget_users(["u1"]) == Erased()
