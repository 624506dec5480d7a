"""What the ranker serves alone when feature_svc or candidate_svc cannot answer in time (issue 11,
"degraded, not down"): the user's last good list for the version, else the bundle's popularity order
(ServingModel.popular), minus the request's exclusions and what the user interacted with since, marked in
the response (`degraded`) and counted. UNAVAILABLE only when there is nothing honest to serve.

Last good lists live in this process: a bounded LRU of each user's last normal answer per version (about
1 KB per user at k = 10). They do not need the cache to be on, and a Redis outage cannot take them away.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from recsys.metrics import RECOMMEND_DEGRADED
from recsys.pipeline.model import ServingModel
from recsys.v1 import recommender_pb2 as pb


class DegradedAnswers:
    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._last: OrderedDict[tuple[str, str], list[pb.RecommendedItem]] = OrderedDict()
        self._lock = threading.Lock()  # remembered from the event loop, read from it too; cheap insurance

    def __len__(self) -> int:
        return len(self._last)

    def remember(self, user_id: str, resp: pb.RecommendResponse) -> None:
        """A normal, personalized answer becomes the user's last good list for its version."""
        if self.capacity <= 0 or resp.degraded or resp.fallback or resp.cold_start or not resp.items:
            return
        key = (user_id, resp.model_version)
        items = [pb.RecommendedItem(item_id=it.item_id, score=it.score, sources=it.sources, title=it.title,
                                    categories=it.categories) for it in resp.items]
        with self._lock:
            self._last[key] = items
            self._last.move_to_end(key)
            while len(self._last) > self.capacity:
                self._last.popitem(last=False)

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
