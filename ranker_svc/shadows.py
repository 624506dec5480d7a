"""Shadow versions: a configured share of requests is also answered, in the background, by a version
that is never returned (docs/experiments.md, "Shadows"). The shadow starts after the real answer is
ready, runs with its own deadline, and is skipped (and counted) when `shadow_max_in_flight` shadows
already run, so it can neither slow nor fail the real answer; its list is logged as a shadow exposure
with the real request's id, so the two can be compared offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from ranker_svc.exposures import ExposureLog
from recsys.experiments.assignment import BUCKETS, bucket
from recsys.experiments.config import Shadow
from recsys.metrics import SHADOW_LATENCY, SHADOW_REQUESTS
from recsys.pipeline.types import RecommendParams
from recsys.v1 import recommender_pb2 as pb

log = logging.getLogger("ranker_svc.shadows")
Compute = Callable[[RecommendParams, str], Awaitable[pb.RecommendResponse]]


def selected(shadow: Shadow, request_id: str) -> bool:
    """Deterministic per request id: a retried request is shadowed or not, the same both times."""
    return bucket(f"shadow:{shadow.name}", request_id) < round(shadow.share * BUCKETS)


class ShadowRunner:
    def __init__(self, compute: Compute, exposures: ExposureLog | None, max_in_flight: int):
        self.compute = compute
        self.exposures = exposures
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._tasks: set[asyncio.Task] = set()

    def start(self, shadows: Sequence[Shadow], request: pb.RecommendRequest, request_id: str,
              params: RecommendParams, answered_by: str) -> None:
        """Start the shadows that select this request; never blocks, never raises."""
        if self.exposures is None:
            return
        for shadow in shadows:
            if shadow.model_version == answered_by or not selected(shadow, request_id):
                continue
            if self.in_flight >= self.max_in_flight:
                SHADOW_REQUESTS.labels(shadow.name, "skipped").inc()
                continue
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(shadow, request, request_id, params))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, shadow: Shadow, request: pb.RecommendRequest, request_id: str,
                   params: RecommendParams) -> None:
        t0 = time.perf_counter()
        try:
            resp = await self.compute(params, shadow.model_version)
        except Exception as exc:  # a shadow's failure is its own: counted, logged at debug level
            SHADOW_REQUESTS.labels(shadow.name, "error").inc()
            log.debug("shadow %s for request %s failed: %s", shadow.name, request_id, exc)
            return
        finally:
            self.in_flight -= 1
        SHADOW_REQUESTS.labels(shadow.name, "ok").inc()
        SHADOW_LATENCY.labels(shadow.name).observe(time.perf_counter() - t0)
        resp.request_id = request_id
        resp.assignments.add(experiment=shadow.name, arm="shadow")
        assert self.exposures is not None
        self.exposures.record(request, resp, shadow=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
