"""The FeatureStorage contract for online updates (issue 9), against every backend: idempotent events,
capped histories, item and user upserts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recsys.storage import Event, FeatureStorage, ItemRecord

from .test_storage_contract import ITEM_FEATURES, make_tables, storage  # noqa: F401  (the backend fixture)


@pytest.fixture
def loaded(storage: FeatureStorage) -> FeatureStorage:  # noqa: F811
    storage.load(make_tables())
    return storage


def _counter(store: FeatureStorage, user: str) -> float:
    rec = store.get_users([user])[0]
    assert rec is not None
    return float(rec.values[store.user_feature_names.index("user_n_interactions")])


def test_an_event_id_applied_twice_changes_nothing(loaded: FeatureStorage) -> None:
    batch = [Event("u2", "i3", "click", event_id="e1"), Event("u2", "i4", "click", event_id="e2")]
    assert loaded.record_events(batch) == 2
    assert loaded.record_events(batch) == 0
    assert loaded.record_events([Event("u2", "i5", event_id="e1")]) == 0  # the id decides, not the content
    user = loaded.get_users(["u2"])[0]
    assert user is not None and user.history == ["i3", "i4"]
    assert _counter(loaded, "u2") == 2.0
    item = loaded.get_items(["i3"])[0]
    assert item is not None and item.values[ITEM_FEATURES.index("item_n_interactions")] == 11.0


def test_events_without_ids_are_always_applied(loaded: FeatureStorage) -> None:
    assert loaded.record_events([Event("u2", "i3"), Event("u2", "i3")]) == 2
    assert _counter(loaded, "u2") == 2.0


def test_a_reload_forgets_applied_ids_with_the_data(loaded: FeatureStorage) -> None:
    loaded.record_events([Event("u2", "i3", event_id="e1")])
    loaded.load(make_tables())
    assert loaded.record_events([Event("u2", "i3", event_id="e1")]) == 1


def test_histories_are_capped_oldest_dropped_counters_kept(loaded: FeatureStorage) -> None:
    loaded.history_cap = 5
    events = [Event("u2", f"x{k}", event_id=f"c{k}") for k in range(12)]
    assert loaded.record_events(events) == 12
    user = loaded.get_users(["u2"])[0]
    assert user is not None and user.history == [f"x{k}" for k in range(7, 12)]
    assert _counter(loaded, "u2") == 12.0


def test_a_huge_batch_for_one_user_never_stalls_readers(loaded: FeatureStorage) -> None:
    loaded.history_cap = 1000
    events = [Event("u1", f"y{k % 3000}", event_id=f"h{k}") for k in range(10_000)]
    worst, stop = 0.0, threading.Event()

    def read() -> None:
        nonlocal worst
        while not stop.is_set():
            t = time.perf_counter()
            loaded.get_users(["u1"], history_limit=10)
            worst = max(worst, time.perf_counter() - t)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert loaded.record_events(events) == 10_000
    finally:
        stop.set()
        reader.join()
    user = loaded.get_users(["u1"])[0]
    assert user is not None and len(user.history) == 1000
    assert worst < 0.5, f"a read waited {worst:.3f}s behind the batch"


def test_item_upsert_creates_then_updates_keeping_counters(loaded: FeatureStorage) -> None:
    width = len(loaded.item_feature_names)
    new = ItemRecord("new1", np.zeros(width, dtype=np.float32), ["cat1", "fresh"], "Brand new")
    assert loaded.upsert_items([new]) == 1
    got = loaded.get_items(["new1", "i1"])
    assert got[0] is not None and got[0].title == "Brand new" and got[0].categories == ["cat1", "fresh"]
    assert got[1] is not None  # the rest of the catalogue is still found
    loaded.record_events([Event("u1", "new1", event_id="n1")])
    loaded.upsert_items([ItemRecord("new1", np.zeros(width, dtype=np.float32), ["other"], "Renamed")])
    again = loaded.get_items(["new1"])[0]
    assert again is not None and again.title == "Renamed" and again.categories == ["other"]
    assert again.values[ITEM_FEATURES.index("item_n_interactions")] == 1.0
    loaded.upsert_items([ItemRecord("i2", np.zeros(width, dtype=np.float32), ["x"], "T")])
    i2 = loaded.get_items(["i2"])[0]
    assert i2 is not None and i2.values[ITEM_FEATURES.index("item_n_interactions")] == 10.0 and i2.title == "T"


def test_many_new_items_are_all_found(loaded: FeatureStorage) -> None:
    width = len(loaded.item_feature_names)
    recs = [ItemRecord(f"n{k}", np.full(width, k, dtype=np.float32), [], f"t{k}") for k in range(300)]
    loaded.upsert_items(recs)
    got = loaded.get_items([f"n{k}" for k in range(300)] + ["i1", "missing"])
    assert [g.title if g else None for g in got] == [f"t{k}" for k in range(300)] + ["Title 0 – naïve", None]


def test_user_upsert_creates_and_merges_attributes(loaded: FeatureStorage) -> None:
    assert loaded.upsert_users([("u1", {"tier": "gold"}), ("fresh", {"country": "FR"})]) == 2
    u1, fresh = loaded.get_users(["u1", "fresh"])
    assert u1 is not None and u1.attributes == {"country": "DE", "tier": "gold"}
    assert u1.history == ["i1", "i2"]
    assert fresh is not None and fresh.attributes == {"country": "FR"} and fresh.history == []
    assert not fresh.values.any()
    loaded.upsert_users([("fresh", {"country": "FR"})])
    assert loaded.get_users(["fresh"])[0].attributes == {"country": "FR"}


def test_online_features_follow_the_events(storage: FeatureStorage) -> None:  # noqa: F811
    from recsys.feature_tables import FeatureTables

    users = ["user_n_interactions", "user_n_items", "user_n_click", "user_first_ts", "user_last_ts", "user_age"]
    items = ["item_n_interactions", "item_n_users", "item_n_purchase", "item_first_ts", "item_price"]
    storage.load(FeatureTables(
        user_ids=["u1"], user_feature_names=users, user_values=np.array([[2, 2, 0, 100, 200, 30]], np.float32),
        user_history=[["a", "b"]], user_attributes=[{}], item_ids=["a", "b", "c"], item_feature_names=items,
        item_values=np.array([[5, 4, 0, 50, 9], [1, 1, 0, 60, 9], [0, 0, 0, 0, 9]], np.float32),
        item_categories=[[], [], []], item_titles=["", "", ""]))
    storage.record_events([Event("u1", "a", "click", timestamp=300, event_id="1"),      # a repeat: not a new user
                           Event("u1", "c", "purchase", timestamp=250, event_id="2"),   # new to the user; older
                           Event("u2", "c", "click", timestamp=400, event_id="3")])     # a new user
    u1, u2 = storage.get_users(["u1", "u2"])
    assert dict(zip(users, u1.values.tolist(), strict=True)) == {
        "user_n_interactions": 4, "user_n_items": 3, "user_n_click": 1, "user_first_ts": 100,
        "user_last_ts": 300, "user_age": 30}
    assert dict(zip(users, u2.values.tolist(), strict=True)) == {
        "user_n_interactions": 1, "user_n_items": 1, "user_n_click": 1, "user_first_ts": 400,
        "user_last_ts": 400, "user_age": 0}
    a, _, c = storage.get_items(["a", "b", "c"])
    assert a.values.tolist() == [6, 4, 0, 50, 9]
    assert c.values.tolist() == [2, 2, 1, 250, 9]


def test_embedded_applied_ids_expire_oldest_first_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.storage import embedded
    from recsys.storage.base import APPLIED_TTL_S

    store = embedded.EmbeddedStorage()
    store.load(make_tables())
    clock = [1_000_000.0]
    monkeypatch.setattr(embedded.time, "time", lambda: clock[0])
    assert store.record_events([Event("u2", "i3", event_id=f"old{k}") for k in range(3000)]) == 3000
    clock[0] += APPLIED_TTL_S + 1
    assert store.record_events([Event("u2", "i4", event_id="new")]) == 1
    assert list(store._state.applied) == ["new"]  # the expired ids went on the next apply
    assert store.record_events([Event("u2", "i3", event_id="old0")]) == 1  # forgotten, so applied again
    assert store.record_events([Event("u2", "i3", event_id="new")]) == 0
