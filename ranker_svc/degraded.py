"""What the ranker serves alone when feature_svc or candidate_svc cannot answer in time (issue 11,
"degraded, not down"): the user's last good list for the version, else the bundle's popularity order
(ServingModel.popular), minus the request's exclusions and what the user interacted with since, marked in
the response (`degraded`) and counted. UNAVAILABLE only when there is nothing honest to serve.

Last good lists live in this process: a bounded LRU of each user's last normal answer per version (about
1 KB per user at k = 10). They do not need the cache to be on, and a Redis outage cannot take them away.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from recsys.metrics import RECOMMEND_DEGRADED
from recsys.pipeline.model import ServingModel
from recsys.v1 import recommender_pb2 as pb

# How long a forget is remembered against answers still being computed from the erased data.
_IN_FLIGHT_S = 60.0


class DegradedAnswers:
    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._last: OrderedDict[tuple[str, str], list[pb.RecommendedItem]] = OrderedDict()
        self._lock = threading.Lock()  # remembered from the event loop, forgotten from the follower's thread
        self._forgotten: OrderedDict[str, float] = OrderedDict()  # user -> perf_counter() of their forget

    def __len__(self) -> int:
        return len(self._last)

    def remember(self, user_id: str, resp: pb.RecommendResponse, started: float | None = None) -> None:
        """A normal, personalized answer becomes the user's last good list for its version; not one whose
        computation `started` (time.perf_counter()) before the user was forgotten."""
        if self.capacity <= 0 or resp.degraded or resp.fallback or resp.cold_start or not resp.items:
            return
        key = (user_id, resp.model_version)
        items = [pb.RecommendedItem(item_id=it.item_id, score=it.score, sources=it.sources, title=it.title,
                                    categories=it.categories) for it in resp.items]
        with self._lock:
            forgotten_at = self._forgotten.get(user_id)
            if started is not None and forgotten_at is not None and started <= forgotten_at:
                return
            self._last[key] = items
            self._last.move_to_end(key)
            while len(self._last) > self.capacity:
                self._last.popitem(last=False)

    def forget(self, user_id: str) -> int:
        """Users/Forget: drop the user's last good lists (every version); returns how many."""
        now = time.perf_counter()
        with self._lock:
            keys = [key for key in self._last if key[0] == user_id]  # O(capacity): forgets are rare
            for key in keys:
                del self._last[key]
            self._forgotten.pop(user_id, None)
            self._forgotten[user_id] = now
            while self._forgotten and (len(self._forgotten) > max(1, self.capacity)
                                       or next(iter(self._forgotten.values())) < now - _IN_FLIGHT_S):
                self._forgotten.popitem(last=False)
        return len(keys)

    def answer(self, user_id: str, k: int, model: ServingModel, dependency: str, exclude: Iterable[str],
               diversity_lambda: float) -> pb.RecommendResponse | None:
        """The degraded answer, or None when there is nothing to serve."""
        drop = set(exclude)
        with self._lock:
            last = self._last.get((user_id, model.version))
        items = [it for it in (last or []) if it.item_id not in drop][:k]
        source = "last_good" if items else "popular"
        if len(items) < k:  # pad (or fill) with the popularity order
            have = drop | {it.item_id for it in items}
            for rank, item_id in enumerate(model.popular):
                if len(items) >= k:
                    break
                if item_id not in have:
                    items.append(pb.RecommendedItem(item_id=item_id, score=-float(rank), sources=["popular"]))
        if not items:
            return None
        RECOMMEND_DEGRADED.labels(dependency, source).inc()
        what = "last good list" if source == "last_good" else "popular items"
        return pb.RecommendResponse(items=items, model_version=model.version, diversity_lambda=diversity_lambda,
                                    degraded=f"{dependency} unavailable: {what}")
