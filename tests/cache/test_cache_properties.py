"""Property test: random put/note/get/invalidate sequences against a model of what a hit must report.

The model remembers everything (every event id, every note, every invalidation), the caches forget
within their bounds. Whatever they forget, a hit must never be another user's or fingerprint's list,
never miss an item noted after its generation was read, and never survive max_new new notes or an
invalidation made after that read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.cache import CachedList, CacheHit, ListCache, MemoryListCache
from recsys.cache.redis_cache import RedisListCache

MAX_NEW = 3
USERS = st.sampled_from(["a", "ü"])
FPS = st.sampled_from(["f1", "f2"])
SLOTS = st.integers(0, 2)  # computations in flight: a generation read, not yet put
EVENT_IDS = st.integers(0, 11).map(lambda k: f"e{k}")

BEGIN = st.tuples(st.just("begin"), USERS, SLOTS)
PUT = st.tuples(st.just("put"), SLOTS, FPS)
GET = st.tuples(st.just("get"), USERS, FPS)
NOTE = st.tuples(st.just("note"), USERS, st.lists(EVENT_IDS, max_size=3))
INVALIDATE = st.tuples(st.just("invalidate"), USERS)
# Weighted towards the begin/note/put/get interleavings that produce hits (invalidate ends them).
KINDS = {"begin": BEGIN, "put": PUT, "get": GET, "note": NOTE, "invalidate": INVALIDATE}
WEIGHTS = ["begin"] * 3 + ["put"] * 3 + ["get"] * 4 + ["note"] * 3 + ["invalidate"]
OPS = st.lists(st.sampled_from(WEIGHTS).flatmap(KINDS.__getitem__), min_size=20, max_size=80)


def item_of(event_id: str) -> str:
    """An event id always names the same item, as a redelivered event does."""
    return f"i{int(event_id[1:]) % 7}"


@dataclass
class Model:
    step: int = 0
    seen: dict[str, set[str]] = field(default_factory=dict)  # user -> event ids ever noted
    notes: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # user -> (step, item) of new events
    invalidated: dict[str, list[int]] = field(default_factory=dict)  # user -> steps of invalidate
    slots: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # slot -> (user, generation, step)
    puts: list[tuple[str, str, int, int]] = field(default_factory=list)  # (user, fp, generation, begin step)


def run(cache: ListCache, ops: list[tuple]) -> None:
    m = Model()
    for op in ops:
        m.step += 1
        kind = op[0]
        if kind == "begin":
            _, user, slot = op
            m.slots[slot] = (user, cache.generation(user), m.step)
        elif kind == "put" and op[1] in m.slots:
            user, generation, begun = m.slots.pop(op[1])
            m.puts.append((user, op[2], generation, begun))
            cache.put(user, op[2], CachedList([f"from-{len(m.puts) - 1}"], str(len(m.puts) - 1).encode(), generation))
        elif kind == "note":
            _, user, event_ids = op
            cache.note_interactions(user, [(e, item_of(e)) for e in event_ids])
            seen = m.seen.setdefault(user, set())
            for e in event_ids:
                if e not in seen:
                    seen.add(e)
                    m.notes.setdefault(user, []).append((m.step, item_of(e)))
        elif kind == "invalidate":
            cache.invalidate(op[1])
            m.invalidated.setdefault(op[1], []).append(m.step)
        elif kind == "get":
            _, user, fp = op
            result = cache.get(user, fp)
            if isinstance(result, CacheHit):
                check_hit(m, user, fp, result)
            else:
                assert result in ("miss", "expired", "invalidated")


def check_hit(m: Model, user: str, fp: str, got: CacheHit) -> None:
    put_user, put_fp, generation, begun = m.puts[int(got.entry.payload)]
    assert (put_user, put_fp) == (user, fp), "a hit must be this user's list for this fingerprint"
    assert got.entry.generation == generation
    assert got.entry.item_ids == [f"from-{int(got.entry.payload)}"]
    noted_since = [item for step, item in m.notes.get(user, []) if step > begun]
    assert len(noted_since) < MAX_NEW, "a list must be invalidated by max_new new interactions"
    assert not any(step > begun for step in m.invalidated.get(user, [])), "invalidate must drop the list"
    assert set(noted_since) <= got.interacted_since, "an interaction made since the generation read is missing"
    assert got.interacted_since <= {item for _, item in m.notes.get(user, [])}, "items of another user"


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.mark.parametrize("bounds", [{}, {"max_entries": 2, "max_users": 1, "max_events_per_user": 4}],
                         ids=["roomy", "tight-bounds"])
@SETTINGS
@given(ops=OPS)
def test_memory_hits_are_never_stale(bounds: dict[str, int], ops: list[tuple]) -> None:
    run(MemoryListCache(max_new=MAX_NEW, clock=lambda: 1_700_000_000.0, **bounds), ops)


_prefixes = itertools.count()


@pytest.mark.redis
@settings(SETTINGS, max_examples=60)
@given(ops=OPS)
def test_redis_hits_are_never_stale(redis_server: str, ops: list[tuple]) -> None:
    cache = RedisListCache(f"{redis_server}?prefix=prop:{next(_prefixes)}", max_new=MAX_NEW,
                           max_events_per_user=4)
    try:
        run(cache, ops)
    finally:
        cache.close()
