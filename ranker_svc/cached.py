"""Recommend through the per-user list cache: a hit is the cached list minus what the user interacted
with since and the request's exclusions; a miss computes a deeper list once (concurrent misses for one
user and setting share the computation) and caches it unless it is a degraded or cold-start answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from recsys.cache import CachedList, CacheHit, CacheUnavailable, ListCache, SingleFlight, fingerprint
from recsys.metrics import CACHE_INVALIDATIONS, CACHE_REQUESTS
from recsys.pipeline.config import PipelineConfig
from recsys.v1 import recommender_pb2 as pb

_NOTES_PER_YIELD = 16
_MAX_FORGETS_KEPT = 100_000
Compute = Callable[[int], Awaitable[pb.RecommendResponse]]  # depth -> a response computed without exclusions


def cacheable(request: pb.RecommendRequest) -> bool:
    """Explanations and include_seen answers are debugging tools: always computed."""
    return not request.explain and not request.include_seen


class CachedLists:
    def __init__(self, cache: ListCache, depth: int):
        self.cache = cache
        self.depth = depth
        self.flights = SingleFlight()
        self._forgets: dict[str, int] = {}  # user -> forgets seen: part of the flight key (Users/Forget)
        # an in-process cache answers in microseconds; a network one is called from a worker thread
        self._inline = bool(getattr(cache, "in_process", False))

    async def _call(self, fn, *args):
        return fn(*args) if self._inline else await asyncio.to_thread(fn, *args)

    def key(self, model_version: str, cfg: PipelineConfig, diversity_lambda: float,
            attributes: dict[str, str], arms: tuple[str, ...] = ()) -> str:
        """Everything that changes the list besides the user: version, pipeline settings, λ, the
        attributes (they steer cold-start retrieval), and the experiment arms that answer."""
        return fingerprint(model_version, repr(cfg.cache_key()), cfg.mmr_pool, cfg.fresh_share,
                           round(diversity_lambda, 6),
                           repr(sorted(attributes.items())), *arms)

    async def recommend(self, user_id: str, fp: str, k: int, exclude: Sequence[str],
                        compute: Compute) -> pb.RecommendResponse:
        try:
            found = await self._call(self.cache.get, user_id, fp)
        except CacheUnavailable:
            CACHE_REQUESTS.labels("miss").inc()
            return _filtered(await compute(k + len(exclude)), k, set(exclude), cached=False)
        if isinstance(found, CacheHit):
            resp = _filtered(_parse(found.entry.payload), k, set(exclude) | found.recent | found.interacted_since,
                             cached=True)
            if len(resp.items) >= k:
                CACHE_REQUESTS.labels("hit").inc()
                return resp
            found = "miss"  # too few left after filtering: recompute
        CACHE_REQUESTS.labels(found).inc()
        if found == "invalidated":
            CACHE_INVALIDATIONS.inc()
        depth = max(self.depth, k + len(exclude))
        flight = f"{user_id}\x00{fp}\x00{self._forgets.get(user_id, 0)}"  # never joins one from before a forget
        resp, _ = await self.flights.run(flight, lambda: self._fill(user_id, fp, depth, compute))
        since: frozenset[str] = frozenset()
        # interactions noted while the list was computed, or not yet in the history it read, are filtered too
        with contextlib.suppress(CacheUnavailable):
            since = await self._call(self.cache.noted, user_id)
        return _filtered(resp, k, set(exclude) | since, cached=False)

    async def _fill(self, user_id: str, fp: str, depth: int, compute: Compute) -> pb.RecommendResponse:
        try:
            generation = await self._call(self.cache.generation, user_id)  # before reading the history
        except CacheUnavailable:
            generation = None
        resp = await compute(depth)
        # Degraded and cold-start answers are not cached: the first interaction must personalize the next
        # answer, by whichever path it arrives (another replica, feature_svc's direct RecordEvents).
        if generation is not None and resp.items and not resp.fallback and not resp.cold_start:
            stored = pb.RecommendResponse()
            stored.CopyFrom(resp)
            stored.request_id = ""
            entry = CachedList([it.item_id for it in resp.items], stored.SerializeToString(), generation)
            with contextlib.suppress(CacheUnavailable):
                await self._call(self.cache.put, user_id, fp, entry)
        return resp

    def forget_now(self, user_id: str) -> int:
        """Users/Forget, from any thread: every list and note of the user erased (CacheUnavailable if it
        cannot be); a computation started before stores nothing, a request arriving now does not join it."""
        if len(self._forgets) >= _MAX_FORGETS_KEPT:
            self._forgets.clear()  # only a flight of the last few milliseconds could still be joined
        self._forgets[user_id] = self._forgets.get(user_id, 0) + 1
        return self.cache.forget(user_id)

    async def forget(self, user_id: str) -> int:
        return await self._call(self.forget_now, user_id)

    async def noted(self, user_id: str) -> frozenset[str]:
        """Items the user interacted with recently (filtered from any list served to them)."""
        return await self._call(self.cache.noted, user_id)

    async def note(self, by_user: dict[str, list[tuple[str, str]]]) -> None:
        """Feedback/Send's hook: accepted interactions (event id, item id per user) invalidate or filter
        the users' cached lists."""
        for n, (user_id, pairs) in enumerate(by_user.items(), 1):
            # on failure the TTL bounds how stale a list can get, and the next successful note catches up
            with contextlib.suppress(CacheUnavailable):
                await self._call(self.cache.note_interactions, user_id, pairs)
            if self._inline and n % _NOTES_PER_YIELD == 0:
                await asyncio.sleep(0)  # a batch of 100 users is ~0.5 ms: requests run in between


def _parse(payload: bytes) -> pb.RecommendResponse:
    resp = pb.RecommendResponse()
    resp.ParseFromString(payload)
    return resp


def _filtered(resp: pb.RecommendResponse, k: int, drop: set[str], cached: bool) -> pb.RecommendResponse:
    out = pb.RecommendResponse(request_id=resp.request_id, model_version=resp.model_version,
                               cold_start=resp.cold_start, fallback=resp.fallback,
                               diversity_lambda=resp.diversity_lambda, cached=cached)
    out.items.extend([it for it in resp.items if it.item_id not in drop][:k])
    return out
