"""A forget taken by another ranker replica reaches this one through its stream follower (a real child
process on a real disk log): its in-process cache and what `on_forget` erases (last good lists, queued
exposures) drop the user; without an in-process cache the follower still runs for forgets."""

from __future__ import annotations

import time

import pytest

from ranker_svc.stream_follower import StreamFollower
from recsys.cache import CachedList, MemoryListCache
from recsys.events.forget import encode_forget
from recsys.stream import open_stream


def _wait_for(check, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.02)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_cache", [True, False])
def test_a_forget_from_another_replica_reaches_this_replicas_memory(tmp_path, with_cache: bool) -> None:
    url = f"file://{tmp_path / 'events'}"
    stream = open_stream(url)
    cache = MemoryListCache() if with_cache else None
    forgotten: list[str] = []

    def on_forget(user: str) -> None:
        forgotten.append(user)
        if cache is not None:
            cache.forget(user)

    follower = StreamFollower(url, cache, "this-replica", 100, on_forget=on_forget)
    assert follower.group is not None
    if cache is not None:
        cache.put("u1", "fp", CachedList(["i1"], b"", cache.generation("u1")))
    follower.start(stream)
    try:
        stream.append([("f1", encode_forget("u1", "r1", "desk", int(time.time() * 1000), producer="other-replica"))])
        _wait_for(lambda: forgotten == ["u1"], "the forget reaching on_forget")
        if cache is not None:
            assert cache.get("u1", "fp") == "miss"
    finally:
        follower.stop()
