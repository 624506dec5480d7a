"""The simulation's in-process fast path: the same population, click model and routing, with the cluster
replaced by a list policy, for the calibration runs that need hundreds of simulated experiments (A/A
false-positive rates). Exposures and events become the same stream records the cluster writes, so the
report reads them through the same join (recsys.experiments.analysis.collect)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import numpy as np

from recsys.events.codec import encode_event, encode_exposure
from recsys.experiments.config import ExperimentsConfig
from recsys.experiments.router import RequestFacts, Route, route
from recsys.simulation.population import Population
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import stream_pb2 as spb

# (user id, the request's route, k) -> the item ids shown, in order
Policy = Callable[[str, Route, int], list[str]]


def noisy_truth_policy(population: Population, noise: Callable[[Route], float], seed: int = 0) -> Policy:
    """Lists ranked by the user's true affinity plus Gumbel noise of scale noise(route): a ranker whose
    quality the noise sets (0 = perfect). Arms with equal noise are an A/A test."""
    rng = np.random.default_rng([seed, 4])
    n_items = len(population.world.item_vectors)
    index = {population.user_id(j): j for j in range(len(population))}
    items = [f"i{i}" for i in range(n_items)]

    def policy(user_id: str, r: Route, k: int) -> list[str]:
        z = population.z_all(index[user_id])
        top = np.argsort(-(z + noise(r) * rng.gumbel(size=n_items)))[:k]
        return [items[i] for i in top]

    return policy


class InProcessService:
    """Routes each request with the experiments config, answers with the policy, and keeps the exposure
    and event records the cluster would have appended."""

    def __init__(self, config: ExperimentsConfig, policy: Policy, drop: Callable[[Route], bool] | None = None):
        """drop(route) True: the exposure is lost (an injected logging fault, for SRM tests)."""
        self.config = config
        self.policy = policy
        self.drop = drop or (lambda r: False)
        self.exposures: list[bytes] = []
        self.events: list[bytes] = []
        self._ids = itertools.count()

    async def recommend(self, request: pb.RecommendRequest, timeout: float) -> pb.RecommendResponse:
        ms = request.context.time.ToMilliseconds()
        r = route(self.config, RequestFacts(request.user_id, request.context.surface, request.context.device),
                  now=dt.datetime.fromtimestamp(ms / 1000, dt.UTC))
        resp = pb.RecommendResponse(request_id=f"r{next(self._ids)}", model_version=r.model_version or "default",
                                    items=[pb.RecommendedItem(item_id=i) for i in self.policy(request.user_id, r,
                                                                                                request.k)],
                                    assignments=[pb.Assignment(experiment=a.experiment, arm=a.arm, forced=a.forced,
                                                               unit=a.unit)
                                                 for a in r.assignments])
        if not self.drop(r):
            self.exposures.append(encode_exposure(spb.Exposure(
                request_id=resp.request_id, user_id=request.user_id, model_version=resp.model_version,
                items=[spb.ExposedItem(item_id=it.item_id, position=p) for p, it in enumerate(resp.items)],
                assignments=resp.assignments), ms, ms))
        return resp

    async def send(self, events: list[fpb.FeedbackEvent], timeout: float) -> fpb.SendResponse:
        for ev in events:
            ms = ev.timestamp.ToMilliseconds()
            self.events.append(encode_event(ev, ms))
        return fpb.SendResponse(accepted=len(events))
