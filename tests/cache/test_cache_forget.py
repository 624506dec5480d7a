"""The ListCache contract for forgetting a user (issue 11, item 10), against every backend."""

from __future__ import annotations

import pytest

from recsys.cache import CachedList, ListCache
from recsys.cache.redis_cache import RedisListCache

from .test_cache_contract import U, backend, cache, entry, hit  # noqa: F401  (the backend fixtures)


def test_forget_erases_every_list_note_and_in_flight_put_of_the_user_only(cache: ListCache) -> None:  # noqa: F811
    odd = "a*b?[c]\\"  # glob characters: the Redis backend must match them literally
    for user in (U, odd, "u2"):
        cache.note_interactions(user, [("e1", "seen")])
        cache.put(user, "f1", entry(cache, user=user))
        cache.put(user, "f2", entry(cache, user=user))
    in_flight = cache.generation(U)
    assert cache.forget(U) == 2
    assert cache.get(U, "f1") == "miss" and cache.get(U, "f2") == "miss"
    assert cache.noted(U) == frozenset()
    cache.put(U, "f1", CachedList(["stale"], b"", in_flight))  # computed before the forget: never stored
    assert cache.get(U, "f1") == "miss"
    assert hit(cache.get(odd, "f1")).recent == {"seen"}  # the others keep theirs
    assert hit(cache.get("u2", "f2")).recent == {"seen"}
    assert cache.forget(odd) == 2 and cache.forget("u2") == 2
    assert cache.forget(U) == 0 and cache.forget("never-seen") == 0


def test_a_forgotten_user_is_cached_again_like_a_new_one(cache: ListCache) -> None:  # noqa: F811
    cache.note_interactions(U, [("e1", "x")])
    cache.forget(U)
    assert cache.note_interactions(U, [("e1", "x")]) == 1  # its event ids were forgotten too
    cache.put(U, "fp", entry(cache, items=("fresh",)))
    got = hit(cache.get(U, "fp"))
    assert got.entry.item_ids == ["fresh"] and got.recent == {"x"}


@pytest.mark.redis
def test_redis_forget_leaves_no_key_of_the_user(redis_url: str) -> None:
    import redis

    shared = RedisListCache(redis_url, max_new=3)
    try:
        shared.note_interactions(U, [("e1", "x")])
        shared.put(U, "fp", CachedList(["a"], b"", shared.generation(U)))
        shared.put("other", "fp", CachedList(["a"], b"", shared.generation("other")))
        shared.forget(U)
        client = redis.Redis.from_url(redis_url)
        keys = [k.decode() for k in client.keys("*")]
        client.close()
        assert keys and not [k for k in keys if U in k], keys
    finally:
        shared.close()
