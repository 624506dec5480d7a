"""The ListCache contract, run against every backend so ranker_svc can swap them by URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from recsys.cache import CachedList, CacheHit, ListCache, MemoryListCache, fingerprint, open_cache
from recsys.cache.redis_cache import RedisListCache

U = "ü-sér 🚀"  # non-ASCII on purpose: ids travel through Lua and JSON


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """Makes caches of one backend and moves its time forward (a fake clock, or sleeping for Redis)."""

    name: str
    make: Callable[..., ListCache]
    advance: Callable[[float], None]
    opened: list[ListCache] = field(default_factory=list)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        def advance(seconds: float) -> None:
            clock.now += seconds

        b = Backend("memory", lambda **kw: MemoryListCache(clock=clock, **kw), advance)
    else:
        url = request.getfixturevalue("redis_url")
        b = Backend("redis", lambda **kw: RedisListCache(url, **kw), time.sleep)
    maker = b.make

    def make(**kw: object) -> ListCache:
        cache = maker(**kw)
        b.opened.append(cache)
        return cache

    b.make = make
    yield b
    for cache in b.opened:
        cache.close()


@pytest.fixture
def cache(backend: Backend) -> ListCache:
    return backend.make(max_new=3)


def entry(cache: ListCache, user: str = U, items: tuple[str, ...] = ("i1", "i2", "i3"),
          payload: bytes = b"\x00resp\n\xff") -> CachedList:
    return CachedList(list(items), payload, cache.generation(user))


def hit(result: CacheHit | str) -> CacheHit:
    assert isinstance(result, CacheHit), f"expected a hit, got {result!r}"
    return result


def test_miss_then_hit_round_trips_the_entry(cache: ListCache) -> None:
    assert cache.ping()
    assert cache.get(U, "fp") == "miss"
    stored = entry(cache, items=("a", "ß", "🚀"))
    before = time.time()
    cache.put(U, "fp", stored)
    got = hit(cache.get(U, "fp"))
    assert got.entry.item_ids == ["a", "ß", "🚀"]
    assert got.entry.payload == b"\x00resp\n\xff"
    assert got.entry.generation == stored.generation
    assert got.entry.stored_at > 0 and (cache.in_process or got.entry.stored_at >= before)
    assert got.interacted_since == frozenset()
    assert hit(cache.get(U, "fp")).entry == got.entry  # a hit does not consume the entry


def test_stored_at_is_kept_when_given_and_empty_lists_round_trip(cache: ListCache) -> None:
    cache.put(U, "fp", CachedList([], b"", cache.generation(U), stored_at=123.5))
    got = hit(cache.get(U, "fp"))
    assert (got.entry.item_ids, got.entry.payload, got.entry.stored_at) == ([], b"", 123.5)


def test_returned_lists_are_copies(cache: ListCache) -> None:
    items = ["i1", "i2"]
    cache.put(U, "fp", CachedList(items, b"p", cache.generation(U)))
    items.append("mutated")
    hit(cache.get(U, "fp")).entry.item_ids.append("mutated too")
    assert hit(cache.get(U, "fp")).entry.item_ids == ["i1", "i2"]


def test_put_replaces_the_list(cache: ListCache) -> None:
    cache.put(U, "fp", entry(cache, items=("old",)))
    cache.put(U, "fp", entry(cache, items=("new",)))
    assert hit(cache.get(U, "fp")).entry.item_ids == ["new"]


def test_ttl_expiry_then_deleted(backend: Backend) -> None:
    cache = backend.make(ttl_s=0.4)
    cache.put(U, "fp", entry(cache))
    backend.advance(0.05)
    hit(cache.get(U, "fp"))
    backend.advance(0.4)
    assert cache.get(U, "fp") == "expired"
    assert cache.get(U, "fp") == "miss"  # deleted on read


def test_invalidated_at_the_nth_new_interaction(cache: ListCache) -> None:  # max_new = 3
    cache.put(U, "fp", entry(cache))
    assert cache.note_interactions(U, [("e1", "x"), ("e2", "y")]) == 2
    assert hit(cache.get(U, "fp")).interacted_since == {"x", "y"}
    assert cache.note_interactions(U, [("e3", "z")]) == 1
    assert cache.get(U, "fp") == "invalidated"
    assert cache.get(U, "fp") == "miss"  # deleted on read


def test_interacted_since_holds_only_items_noted_after_the_generation(cache: ListCache) -> None:
    cache.note_interactions(U, [("e0", "before")])
    cache.put(U, "fp", entry(cache))
    assert hit(cache.get(U, "fp")).interacted_since == frozenset()
    cache.note_interactions(U, [("e1", "after"), ("e2", "i2")])
    assert hit(cache.get(U, "fp")).interacted_since == {"after", "i2"}
    cache.note_interactions("someone else", [("e9", "theirs")])
    assert hit(cache.get(U, "fp")).interacted_since == {"after", "i2"}


def test_notes_are_idempotent_per_event_id(cache: ListCache) -> None:
    g0 = cache.generation(U)
    assert cache.note_interactions(U, [("e1", "x"), ("e1", "x"), ("e2", "y")]) == 2
    assert cache.generation(U) == g0 + 2
    assert cache.note_interactions(U, [("e1", "x"), ("e2", "y")]) == 0  # a redelivered batch
    assert cache.generation(U) == g0 + 2
    assert cache.note_interactions(U, []) == 0
    assert cache.note_interactions(U, [("e3", "")]) == 0  # no item: skipped
    # the same event id of another user is another event
    assert cache.note_interactions("u2", [("e1", "x")]) == 1


def test_re_noting_an_item_moves_it_to_its_latest_generation(cache: ListCache) -> None:
    cache.note_interactions(U, [("e1", "x")])
    cache.put(U, "fp", entry(cache))
    cache.note_interactions(U, [("e2", "x")])
    assert hit(cache.get(U, "fp")).interacted_since == {"x"}


def test_interaction_noted_while_computing_is_still_filtered(cache: ListCache) -> None:
    generation = cache.generation(U)  # 1. read BEFORE the computation reads the history
    cache.note_interactions(U, [("e1", "clicked-meanwhile")])  # 2. arrives mid-computation
    cache.put(U, "fp", CachedList(["clicked-meanwhile", "i2"], b"", generation))  # 3. stale w.r.t. the click
    got = hit(cache.get(U, "fp"))
    assert got.entry.generation == generation
    assert got.interacted_since == {"clicked-meanwhile"}


def test_a_put_that_is_already_invalid_is_not_stored(cache: ListCache) -> None:  # max_new = 3
    generation = cache.generation(U)
    cache.note_interactions(U, [(f"e{k}", f"x{k}") for k in range(3)])
    cache.put(U, "fp", CachedList(["i1"], b"", generation))
    assert cache.get(U, "fp") == "miss"
    cache.put(U, "fp", CachedList(["i1"], b"", cache.generation(U) + 1))  # from the future: not trusted
    assert cache.get(U, "fp") == "miss"


def test_fingerprints_and_users_are_independent(cache: ListCache) -> None:
    cache.put(U, fingerprint("v1", 0.5), entry(cache, items=("a",)))
    cache.put(U, fingerprint("v2", 0.5), entry(cache, items=("b",)))
    cache.put("u2", fingerprint("v1", 0.5), entry(cache, user="u2", items=("c",)))
    assert hit(cache.get(U, fingerprint("v1", 0.5))).entry.item_ids == ["a"]
    assert hit(cache.get(U, fingerprint("v2", 0.5))).entry.item_ids == ["b"]
    assert hit(cache.get("u2", fingerprint("v1", 0.5))).entry.item_ids == ["c"]
    assert cache.get(U, fingerprint("v1", 0.7)) == "miss"
    cache.note_interactions(U, [("e1", "a")])  # interactions belong to the user, not to one list
    assert hit(cache.get(U, fingerprint("v2", 0.5))).interacted_since == {"a"}
    assert hit(cache.get("u2", fingerprint("v1", 0.5))).interacted_since == frozenset()


def test_invalidate_drops_every_list_of_the_user_and_in_flight_puts(cache: ListCache) -> None:
    cache.put(U, "f1", entry(cache))
    cache.put(U, "f2", entry(cache))
    cache.put("u2", "f1", entry(cache, user="u2"))
    in_flight = cache.generation(U)
    cache.invalidate(U)
    assert cache.get(U, "f1") == "invalidated" and cache.get(U, "f2") == "invalidated"
    assert cache.get(U, "f1") == "miss"
    hit(cache.get("u2", "f1"))
    cache.put(U, "f1", CachedList(["stale"], b"", in_flight))  # computed before the invalidation
    assert cache.get(U, "f1") == "miss"
    cache.put(U, "f1", entry(cache, items=("fresh",)))
    assert hit(cache.get(U, "f1")).entry.item_ids == ["fresh"]
    cache.invalidate("never-seen")  # no error for unknown users


def test_empty_user_id_is_rejected(cache: ListCache) -> None:
    with pytest.raises(ValueError, match="user_id"):
        cache.get("", "fp")
    with pytest.raises(ValueError, match="user_id"):
        cache.note_interactions("", [("e", "i")])


def test_concurrent_notes_from_threads_count_each_event_once(backend: Backend) -> None:
    cache = backend.make(max_new=1000)
    g0 = cache.generation(U)
    counts: list[int] = []

    def worker(w: int) -> None:  # every event id is sent by two threads
        counts.append(sum(cache.note_interactions(U, [(f"e{k}", f"i{k}")]) for k in range(w % 2, 60, 2)))
        counts.append(sum(cache.note_interactions(U, [(f"e{k}", f"i{k}")]) for k in range(w % 2, 60, 2)))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 60
    assert cache.generation(U) == g0 + 60


def test_context_manager_closes(backend: Backend) -> None:
    with backend.make() as cache:
        assert cache.ping()


# -- open_cache and fingerprint ---------------------------------------------------------------------


def test_open_cache_by_url(redis_server: str) -> None:
    for off in ("", "none", " None ", None, "off"):
        assert open_cache(off) is None
    mem = open_cache("memory://", ttl_s=60, max_new=4)
    assert isinstance(mem, MemoryListCache) and (mem.ttl_s, mem.max_new, mem.max_entries) == (60, 4, 100_000)
    sized = open_cache("memory://?max_entries=5&max_users=7&max_events_per_user=9")
    assert isinstance(sized, MemoryListCache) and (sized.max_entries, sized.max_users) == (5, 7)
    assert (sized.ttl_s, sized.max_new, sized.max_events_per_user) == (900, 10, 9)
    red = open_cache(f"{redis_server}?prefix=rk:c&timeout=0.5&connect_timeout=0.1", ttl_s=30)
    assert isinstance(red, RedisListCache) and red.prefix == "rk:c" and red.ttl_s == 30
    assert red.ping()
    red.close()
    with pytest.raises(ValueError, match="memcache"):
        open_cache("memcache://x")
    with pytest.raises(ValueError, match="maxentries"):
        open_cache("memory://?maxentries=5")
    with pytest.raises(ValueError, match="timeout"):
        open_cache("redis://127.0.0.1:1/0?timeout=fast")
    with pytest.raises(ValueError, match="braces"):
        open_cache("redis://127.0.0.1:1/0?prefix={x}")
    with pytest.raises(ValueError, match="max_new"):
        open_cache("memory://", max_new=0)


def test_fingerprint_is_short_stable_and_unambiguous() -> None:
    fp = fingerprint("model-v3", 0.7, "arm-b")
    assert fp == fingerprint("model-v3", 0.7, "arm-b") and len(fp) == 16
    assert fp == "733b420f1ad69fd1"  # stable across processes and releases: replicas must agree
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint("a", "b") != fingerprint("b", "a")
    assert fingerprint() != fingerprint("")


# -- backend specifics: the memory bounds, Redis keys and failures -----------------------------------


def test_memory_lru_bounds_the_entries() -> None:
    cache = MemoryListCache(max_entries=2, clock=FakeClock())
    for user in ("a", "b"):
        cache.put(user, "fp", entry(cache, user=user))
    hit(cache.get("a", "fp"))  # a is now the most recently used
    cache.put("c", "fp", entry(cache, user="c"))
    assert len(cache) == 2
    assert cache.get("b", "fp") == "miss"
    hit(cache.get("a", "fp"))
    hit(cache.get("c", "fp"))


def test_memory_bounds_noted_items_and_event_ids_per_user() -> None:
    cache = MemoryListCache(max_new=2, max_events_per_user=3, clock=FakeClock())
    cache.note_interactions("a", [(f"e{k}", f"i{k}") for k in range(20)])
    state = cache._users["a"]
    assert list(state.noted) == [f"i{k}" for k in range(12, 20)]  # 4 x max_new
    assert list(state.events) == ["e17", "e18", "e19"]
    assert cache.note_interactions("a", [("e19", "i19"), ("e0", "i0")]) == 1  # e0 was forgotten


def test_memory_evicted_user_state_never_hides_an_interaction() -> None:
    """Evicting a user's state forgets its noted items: its lists and in-flight puts must die with it."""
    cache = MemoryListCache(max_new=3, max_users=2, clock=FakeClock())
    cache.put("a", "fp", entry(cache, user="a"))
    in_flight = cache.generation("a")
    cache.note_interactions("a", [("e1", "x")])
    cache.note_interactions("b", [("e1", "y")])
    cache.note_interactions("c", [("e1", "z")])  # evicts a's state (least recently used)
    assert "a" not in cache._users
    assert cache.get("a", "fp") == "invalidated"
    cache.put("a", "fp", CachedList(["x"], b"", in_flight))  # computed before x was noted
    assert cache.get("a", "fp") == "miss"
    cache.put("a", "fp", entry(cache, user="a"))
    assert hit(cache.get("a", "fp")).interacted_since == frozenset()
    hit(cache.get("a", "fp"))


def test_memory_lists_survive_other_users_evictions() -> None:
    """A put gives the user a state, so evicting others (which raises the floor) cannot invalidate it."""
    cache = MemoryListCache(max_new=3, max_users=2, clock=FakeClock())
    cache.put("a", "fp", entry(cache, user="a"))
    for other in ("b", "c", "d", "e"):
        hit(cache.get("a", "fp"))  # keeps a's state the most recently used
        cache.note_interactions(other, [("e1", "x"), ("e2", "y"), ("e3", "z")])
    assert hit(cache.get("a", "fp")).interacted_since == frozenset()


def test_redis_keys_share_the_user_hash_tag_and_all_expire(redis_url: str) -> None:
    import redis

    cache = RedisListCache(redis_url + "?prefix=t:c", ttl_s=60, max_new=2)
    cache.put(U, "fp", entry(cache))
    cache.note_interactions(U, [(f"e{k}", f"i{k}") for k in range(100)])
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.keys("*"))
    tag = "{" + U + "}"
    assert keys == [f"t:c:{tag}:{s}" for s in ("e", "g", "l:fp", "n")]
    assert all(0 < client.pttl(k) <= 2 * 66_000 for k in keys)
    assert client.zcard(f"t:c:{tag}:n") == 8  # 4 x max_new
    assert client.zcard(f"t:c:{tag}:e") == 64
    client.close()
    cache.close()


def test_redis_replicas_share_lists_and_interactions(redis_url: str) -> None:
    one, two = RedisListCache(redis_url), RedisListCache(redis_url)
    other_prefix = RedisListCache(redis_url + "?prefix=elsewhere")
    one.put(U, "fp", entry(one))
    two.note_interactions(U, [("e1", "x")])
    assert hit(one.get(U, "fp")).interacted_since == {"x"}
    assert one.note_interactions(U, [("e1", "x")]) == 0  # the event was seen by the other replica
    assert other_prefix.get(U, "fp") == "miss"
    for c in (one, two, other_prefix):
        c.close()


def _closed_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


CALLS: dict[str, Callable[[ListCache], object]] = {
    "get": lambda c: c.get("u", "fp"),
    "generation": lambda c: c.generation("u"),
    "put": lambda c: c.put("u", "fp", CachedList(["i"], b"", 0)),
    "note_interactions": lambda c: c.note_interactions("u", [("e", "i")]),
    "invalidate": lambda c: c.invalidate("u"),
}


@pytest.mark.parametrize("call", CALLS)
def test_unreachable_redis_raises_cache_unavailable_quickly(call: str) -> None:
    from recsys.cache import CacheUnavailable

    port = _closed_port()
    cache = RedisListCache(f"redis://:secret@127.0.0.1:{port}/0")  # lazy: constructing never blocks
    start = time.monotonic()
    with pytest.raises(CacheUnavailable, match=f"127.0.0.1:{port}") as info:
        CALLS[call](cache)
    assert "secret" not in str(info.value)
    assert cache.ping() is False
    assert time.monotonic() - start < 2.0
    cache.close()


def test_hung_redis_times_out_after_the_short_timeout() -> None:
    import socket

    from recsys.cache import CacheUnavailable

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # accepts (backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        cache = RedisListCache(f"redis://127.0.0.1:{s.getsockname()[1]}/0?timeout=0.1")
        start = time.monotonic()
        with pytest.raises(CacheUnavailable, match="Timeout"):
            cache.get("u", "fp")
        assert time.monotonic() - start < 1.0
        cache.close()


def test_noted_items_are_known_without_a_list(cache) -> None:
    assert cache.noted("nobody") == frozenset()
    cache.note_interactions("u-noted", [("e1", "a"), ("e2", "b"), ("e2", "b")])
    assert cache.noted("u-noted") == frozenset({"a", "b"})
