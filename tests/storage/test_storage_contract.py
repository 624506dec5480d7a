"""The FeatureStorage contract, run against every backend so they stay interchangeable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import recsys.storage as backends
from recsys import id_index
from recsys.feature_tables import FeatureTables
from recsys.storage import EmbeddedStorage, Event, FeatureStorage, ItemRecord, open_storage
from recsys.storage.redis_store import RedisStorage

USER_FEATURES = ["user_age", "user_n_interactions"]
ITEM_FEATURES = ["item_price", "item_n_interactions"]


def make_tables(n_items: int = 5, prefix: str = "i", created_at: float = 1_700_000_000.0) -> FeatureTables:
    item_ids = [f"{prefix}{k}" for k in range(1, n_items + 1)]
    return FeatureTables(
        user_ids=["u1", "u2", "ü-sér 🚀"],
        user_feature_names=USER_FEATURES,
        user_values=np.array([[31, 2], [45, 0], [22.5, 3]], dtype=np.float32),
        user_history=[[item_ids[0], item_ids[1]], [], [item_ids[2], item_ids[0], item_ids[3]]],
        user_attributes=[{"country": "DE"}, {}, {"città": "Milano", "tier": "gold"}],
        item_ids=item_ids,
        item_feature_names=ITEM_FEATURES,
        item_values=np.column_stack([np.arange(n_items, dtype=np.float32) + 0.5,
                                     np.full(n_items, 10, dtype=np.float32)]),
        item_categories=[[f"cat{k % 3}", "all"] if k % 4 else [] for k in range(n_items)],
        item_titles=[f"Title {k} – naïve" for k in range(n_items)],
        created_at=created_at,
    )


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request: pytest.FixtureRequest) -> Iterator[FeatureStorage]:
    if request.param == "embedded":
        store: FeatureStorage = EmbeddedStorage()
    else:
        store = RedisStorage(request.getfixturevalue("redis_url"))
    yield store
    store.close()


@pytest.fixture
def loaded(storage: FeatureStorage) -> FeatureStorage:
    storage.load(make_tables())
    return storage


def test_empty_store_knows_nothing(storage: FeatureStorage) -> None:
    assert storage.ping()
    assert storage.user_feature_names == [] and storage.item_feature_names == []
    assert storage.get_users(["u1"]) == [None]
    assert storage.get_items(["i1", "i2"]) == [None, None]
    assert storage.get_items([]) == [] and storage.get_users([]) == []
    assert storage.last_update() == 0.0


def test_load_round_trip(loaded: FeatureStorage) -> None:
    t = make_tables()
    assert loaded.user_feature_names == USER_FEATURES
    assert loaded.item_feature_names == ITEM_FEATURES

    users = loaded.get_users(t.user_ids.tolist())
    for k, user in enumerate(users):
        assert user is not None
        assert user.user_id == t.user_ids[k]
        assert user.values.dtype == np.float32
        np.testing.assert_array_equal(user.values, t.user_values[k])
        assert user.history == t.user_history[k]
        assert user.attributes == t.user_attributes[k]

    items = loaded.get_items(t.item_ids.tolist())
    for k, item in enumerate(items):
        assert item is not None
        assert item.item_id == t.item_ids[k]
        assert item.values.dtype == np.float32
        np.testing.assert_array_equal(item.values, t.item_values[k])
        assert item.categories == t.item_categories[k]
        assert item.title == t.item_titles[k]


def test_unknown_ids_are_none_in_place_and_order_is_kept(loaded: FeatureStorage) -> None:
    items = loaded.get_items(["i3", "nope", "i1", "i3", "", "i5"])
    assert [i.item_id if i else None for i in items] == ["i3", None, "i1", "i3", None, "i5"]
    assert items[0].values[0] == pytest.approx(2.5) and items[2].values[0] == pytest.approx(0.5)

    users = loaded.get_users(["ghost", "u2", "u1"])
    assert users[0] is None
    assert [u.user_id for u in users[1:]] == ["u2", "u1"]
    assert users[2].history == ["i1", "i2"]


def test_history_limit_keeps_the_most_recent_oldest_first(loaded: FeatureStorage) -> None:
    uid = "ü-sér 🚀"  # history i3, i1, i4
    assert loaded.get_users([uid], history_limit=2)[0].history == ["i1", "i4"]
    assert loaded.get_users([uid], history_limit=1)[0].history == ["i4"]
    assert loaded.get_users([uid], history_limit=10)[0].history == ["i3", "i1", "i4"]
    assert loaded.get_users([uid], history_limit=0)[0].history == ["i3", "i1", "i4"]
    assert loaded.get_users(["u2"], history_limit=3)[0].history == []
    with pytest.raises(ValueError, match="history_limit"):
        loaded.get_users([uid], history_limit=-1)


def test_record_events_appends_moves_to_end_and_counts(loaded: FeatureStorage) -> None:
    before = loaded.get_items(["i1", "i5"])
    n = loaded.record_events([
        Event("u1", "i3", "view", 1.0, 1_700_000_100),      # append
        Event("u1", "i1", "click", 1.0, 1_700_000_101),     # already first: moves to the end
        Event("u1", "i1", "purchase", 1.0, 1_700_000_102),  # already last: stays, still counts
    ])
    assert n == 3
    u1 = loaded.get_users(["u1"])[0]
    assert u1.history == ["i2", "i3", "i1"]
    assert u1.values.tolist() == [31.0, 5.0]  # user_n_interactions 2 -> 5, age untouched
    i1, i5 = loaded.get_items(["i1", "i5"])
    assert i1.values.tolist() == [before[0].values[0], 12.0]  # item_n_interactions 10 -> 12
    np.testing.assert_array_equal(i5.values, before[1].values)


def test_record_events_creates_users_and_leaves_unknown_items_uncatalogued(loaded: FeatureStorage) -> None:
    n = loaded.record_events([Event("newbie", "i2"), Event("newbie", "not-in-catalogue"),
                              Event("", "i1"), Event("u1", "")])
    assert n == 2  # events with an empty id are skipped
    newbie = loaded.get_users(["newbie"])[0]
    assert newbie is not None
    assert newbie.history == ["i2", "not-in-catalogue"]
    assert newbie.values.tolist() == [0.0, 2.0]  # zeros, plus the two counted interactions
    assert newbie.attributes == {}
    assert loaded.get_items(["not-in-catalogue"]) == [None]
    assert loaded.get_items(["i2"])[0].values[1] == 11.0


def test_record_events_without_counter_features(storage: FeatureStorage) -> None:
    t = make_tables()
    t.user_feature_names = ["age", "score"]
    t.item_feature_names = ["price", "pop"]
    storage.load(t)
    assert storage.record_events([Event("u1", "i1"), Event("someone", "i2")]) == 2
    u1, someone = storage.get_users(["u1", "someone"])
    np.testing.assert_array_equal(u1.values, t.user_values[0])
    assert someone.values.tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(storage.get_items(["i1"])[0].values, t.item_values[0])


def test_record_events_on_a_never_loaded_store(storage: FeatureStorage) -> None:
    assert storage.record_events([Event("a", "x"), Event("a", "y")]) == 2
    a = storage.get_users(["a"])[0]
    assert a.history == ["x", "y"] and a.values.shape == (0,)
    assert storage.record_events([]) == 0


def test_last_update_advances(storage: FeatureStorage) -> None:
    start = time.time()
    storage.load(make_tables())
    loaded_at = storage.last_update()
    assert start <= loaded_at <= time.time()
    time.sleep(0.01)
    storage.record_events([Event("u1", "i4")])
    assert storage.last_update() > loaded_at
    after_event = storage.last_update()
    time.sleep(0.01)
    assert storage.record_events([Event("", "i4")]) == 0
    assert storage.last_update() == after_event  # nothing applied, nothing changed


def test_reload_replaces_everything(loaded: FeatureStorage) -> None:
    loaded.record_events([Event("temp-user", "i1")])
    new = make_tables(n_items=4, prefix="x", created_at=1_800_000_000.0)
    new.user_feature_names = ["a", "b"]
    new.item_feature_names = ["c", "d"]
    loaded.load(new)

    assert loaded.user_feature_names == ["a", "b"] and loaded.item_feature_names == ["c", "d"]
    assert [i.item_id if i else None for i in loaded.get_items(["i1", "x1", "i5", "x3"])] == [
        None, "x1", None, "x3"]
    assert loaded.get_users(["temp-user"]) == [None]
    assert loaded.get_users(["u1"])[0].history == ["x1", "x2"]

    if isinstance(loaded, RedisStorage):  # the previous generation's keys must be gone
        import redis

        client = redis.Redis.from_url(loaded.url)
        current = client.get(f"{loaded.namespace}:current").decode()
        keys = {k.decode() for k in client.scan_iter(count=1000)}
        client.close()
        data_keys = {k for k in keys if k.startswith(f"{loaded.namespace}:g")}
        assert data_keys, keys
        prefix = f"{loaded.namespace}:g{current}:"
        assert all(k.startswith(prefix) for k in data_keys), sorted(data_keys)
        item_keys = {k[len(prefix) + 2:] for k in data_keys if k.startswith(prefix + "i:")}
        assert item_keys == {"x1", "x2", "x3", "x4"}


def test_large_batch_in_one_call(storage: FeatureStorage) -> None:
    storage.load(make_tables(n_items=3000))
    ids = [f"i{k}" for k in range(2000, 0, -1)]
    ids[100] = "missing"

    calls_before = _redis_mget_calls(storage)
    items = storage.get_items(ids)
    if isinstance(storage, RedisStorage):
        assert _redis_mget_calls(storage) - calls_before == 1  # one MGET for the whole batch

    assert len(items) == 2000 and items[100] is None
    assert all(it.item_id == i for it, i in zip(items, ids, strict=True) if it is not None)
    assert items[0].values[0] == pytest.approx(1999.5)


def test_returned_records_are_copies(loaded: FeatureStorage) -> None:
    user = loaded.get_users(["u1"])[0]
    item = loaded.get_items(["i2"])[0]
    user.values[:] = -1
    user.history.append("zzz")
    user.attributes["x"] = "y"
    item.values[:] = -1
    item.categories.append("zzz")

    user = loaded.get_users(["u1"])[0]
    assert user.values.tolist() == [31.0, 2.0]
    assert user.history == ["i1", "i2"] and user.attributes == {"country": "DE"}
    item = loaded.get_items(["i2"])[0]
    assert item.values.tolist() == [1.5, 10.0] and item.categories == ["cat1", "all"]


def test_concurrent_events_are_all_counted(loaded: FeatureStorage) -> None:
    def worker(w: int) -> None:
        for k in range(50):
            loaded.record_events([Event("u2", f"i{1 + (w + k) % 5}"), Event(f"w{w}", "i1")])

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    u2 = loaded.get_users(["u2"])[0]
    assert u2.values[1] == 200.0
    assert sorted(u2.history) == ["i1", "i2", "i3", "i4", "i5"]  # moved, never duplicated
    assert loaded.get_items(["i1"])[0].values[1] == 10 + 200 + 40  # 40 = u2's share of i1


def test_readers_never_see_a_half_loaded_store(storage: FeatureStorage) -> None:
    """Reload back and forth between two versions while reading: every batch comes from one version."""
    versions = []
    for marker in (1.0, 2.0):
        t = make_tables(n_items=300)
        t.item_values[:, 1] = marker
        t.item_titles = [f"v{marker:.0f}"] * 300
        versions.append(t)
    storage.load(versions[0])
    ids = [f"i{k}" for k in range(1, 301)]
    stop = threading.Event()
    seen: set[float] = set()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                items = storage.get_items(ids)
            except Exception as e:  # surfaced through `errors` in the main thread
                errors.append(repr(e))
                return
            if any(it is None for it in items):
                errors.append(f"{sum(it is None for it in items)} items missing mid-reload")
                continue
            markers = {float(it.values[1]) for it in items}
            titles = {it.title for it in items}
            if len(markers) != 1 or titles != {f"v{next(iter(markers)):.0f}"}:
                errors.append(f"mixed batch: {markers} {titles}")
            seen.update(markers)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for k in range(20):
            storage.load(versions[k % 2])
            time.sleep(0.005)  # reloads are rare in production; let the reader observe each generation
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert seen <= {1.0, 2.0}


@pytest.mark.parametrize("hash_fn", [
    lambda s: {"i1": 1, "i2": 2, "i3": 3, "i4": 4, "i5": 5}.get(s, 1),  # unknown ids share i1's hash
    lambda s: 7,  # every id shares one hash
])
def test_embedded_item_lookup_is_exact_despite_hash_collisions(monkeypatch: pytest.MonkeyPatch, hash_fn) -> None:
    monkeypatch.setattr(id_index, "_hash", hash_fn)
    store = EmbeddedStorage()
    store.load(make_tables())
    items = store.get_items(["i3", "zzz", "i1", "", "i5", "i1"])
    assert [i.item_id if i else None for i in items] == ["i3", None, "i1", None, "i5", "i1"]
    assert items[0].title == "Title 2 – naïve"
    store.upsert_items([ItemRecord("i9", np.zeros(0, np.float32), ["c"], "new")])  # added after the load
    items = store.get_items(["i9", "i3", "i8"])
    assert [i.item_id if i else None for i in items] == ["i9", "i3", None] and items[0].title == "new"


@pytest.mark.redis
def test_redis_replicas_follow_a_reload_by_another_replica(redis_url: str) -> None:
    a, b = RedisStorage(redis_url), RedisStorage(redis_url)
    a.load(make_tables())
    assert b.get_items(["i1"])[0] is not None  # b now caches the first generation
    new = make_tables(n_items=4, prefix="x")
    new.user_feature_names = ["p", "user_n_interactions"]
    a.load(new)

    assert b.get_items(["i1", "x1"])[0] is None and b.get_items(["x1"])[0] is not None
    assert b.user_feature_names == ["p", "user_n_interactions"]
    a.load(make_tables())  # b's cached generation is stale again: its events must land in the new one
    assert b.record_events([Event("u1", "i5")]) == 1
    assert a.get_users(["u1"])[0].history == ["i1", "i2", "i5"]
    a.close()
    b.close()


def test_open_storage_by_url() -> None:
    assert isinstance(open_storage(""), EmbeddedStorage)
    assert isinstance(open_storage("embedded://"), EmbeddedStorage)
    store = open_storage("redis://127.0.0.1:1/0")
    assert isinstance(store, RedisStorage)
    store.close()
    with pytest.raises(ValueError, match="scheme 'mongodb'") as err:
        open_storage("mongodb://user:secret@db:27017")
    assert "secret" not in str(err.value)


def test_a_backend_registers_its_url_scheme() -> None:
    """A new backend plugs in by scheme alone: no server or factory code changes."""

    class Memory(EmbeddedStorage):
        def __init__(self, namespace: str):
            super().__init__()
            self.namespace = namespace

    backends.register_backend(("memtest",), lambda url, namespace: Memory(namespace))
    store = open_storage("memtest://anything", namespace="v2")
    assert isinstance(store, Memory) and store.namespace == "v2"
    assert "memtest" in backends.backend_schemes()


def _redis_mget_calls(storage: FeatureStorage) -> int:
    if not isinstance(storage, RedisStorage):
        return 0
    import redis

    client = redis.Redis.from_url(storage.url)
    stats = client.info("commandstats").get("cmdstat_mget", {})
    client.close()
    return int(stats.get("calls", 0))


def test_item_columns_hold_what_get_items_returns(loaded: FeatureStorage) -> None:
    """The columnar read feature_svc answers from: the records' values, titles and categories in request
    order, NaN values, no title and no categories for unknown ids."""
    ids = ["i3", "nope", "i1", "i4", "i3", "i5"]
    cols = loaded.get_item_columns(ids)
    records = loaded.get_items(ids)
    assert cols.found.tolist() == [r is not None for r in records]
    assert cols.values.dtype == np.float32 and cols.values.shape == (len(ids), len(ITEM_FEATURES))
    for i, rec in enumerate(records):
        if rec is None:
            assert np.isnan(cols.values[i]).all() and cols.titles[i] == "" and list(cols.categories[i]) == []
        else:
            np.testing.assert_array_equal(cols.values[i], rec.values)
            assert cols.titles[i] == rec.title and list(cols.categories[i]) == rec.categories
    cols.values[0] = -1.0  # a private copy, like get_items' records
    assert loaded.get_items(["i3"])[0].values[0] != -1.0
    assert loaded.get_item_columns([]).values.shape == (0, len(ITEM_FEATURES))
