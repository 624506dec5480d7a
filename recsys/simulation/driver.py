"""The simulation loop: simulated days of a population using the real cluster through its public API.

Every user arrives on a random day and comes back on later days with `return_rate`. An active day is
some organic browsing (views the user finds alone, sent without a request id: the pre-experiment
activity CUPED uses), then one or more sessions: a `Recommend` call whose context.time is the simulated
time, and the click model's clicks and purchases sent through `Feedback/Send` naming its request id.
Days run in order (the stream stays chronological); users of a day run with bounded concurrency, each
with its own seeded generator, so the outcome does not depend on the interleaving. The simulated days
end now: every timestamp is in the past, as the Feedback API requires.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np

from recsys.client import interaction
from recsys.simulation.click_model import ClickModel
from recsys.simulation.population import Population
from recsys.v1 import feedback_pb2 as fpb
from recsys.v1 import feedback_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

DAY_S = 86_400


@dataclass(frozen=True)
class SimulationConfig:
    days: int = 7
    pre_days: int = 2           # days of organic activity only, before the first Recommend (CUPED's pre-period)
    k: int = 10
    return_rate: float = 0.5    # chance an arrived user is active on each later day
    extra_sessions: float = 0.5  # sessions beyond the first on an active day (Poisson mean)
    organic: float = 3.0        # organic views per active day (Poisson mean, times the user's activity)
    surface: str = "home"
    concurrency: int = 8        # users in flight (one channel cancels beyond ~1,000)
    seed: int = 0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.days < 1 or self.k < 1 or self.concurrency < 1 or self.pre_days < 0:
            raise ValueError("days, k and concurrency must be >= 1, pre_days >= 0")
        if not 0.0 <= self.return_rate <= 1.0:
            raise ValueError(f"return_rate must be in [0, 1], got {self.return_rate}")


@dataclass
class ArmTally:
    """What one arm's users really got, by the simulation's own truth."""

    units: set[str] = field(default_factory=set)
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    expected_clicks: float = 0.0  # the click model's expectation for the lists shown: the arm's true worth

    def as_dict(self) -> dict[str, float]:
        return {"units": len(self.units), "requests": self.requests, "impressions": self.impressions,
                "clicks": self.clicks, "purchases": self.purchases,
                "expected_clicks_per_request": self.expected_clicks / self.requests if self.requests else 0.0}


@dataclass
class SimulationResult:
    requests: int = 0
    errors: int = 0
    organic: int = 0
    clicks: int = 0
    purchases: int = 0
    rejected: int = 0
    arms: dict[str, ArmTally] = field(default_factory=lambda: defaultdict(ArmTally))  # "experiment=arm"
    seconds: float = 0.0


def schedule(activity: np.ndarray, days: int, return_rate: float, seed: int, pre_days: int = 0) -> list[list[int]]:
    """The users active on each day: arrival in the experiment uniformly over its days; before and after
    it, a user is active on a day with return_rate scaled by the square root of their activity (heavy users
    come back more often, so the pre-period predicts the experiment, as in real traffic)."""
    rng = np.random.default_rng([seed, 2])
    n_users = len(activity)
    arrival = pre_days + rng.integers(0, days, n_users)
    rate = np.minimum(1.0, return_rate * np.sqrt(activity))
    returns = rng.random((n_users, pre_days + days)) < rate[:, None]
    return [np.flatnonzero((arrival == d) | ((arrival < d) & returns[:, d])).tolist() for d in range(pre_days + days)]


class Service(Protocol):
    """What the simulated users call: the cluster's public API (GrpcService), or an in-process stand-in
    for the many-repetition calibration runs (recsys/simulation/fast_path.py)."""

    async def recommend(self, request: pb.RecommendRequest, timeout: float) -> pb.RecommendResponse: ...

    async def send(self, events: list[fpb.FeedbackEvent], timeout: float) -> fpb.SendResponse: ...


class GrpcService:
    def __init__(self, channel: grpc.aio.Channel):
        self.recommender = pb_grpc.RecommenderStub(channel)
        self.feedback = fpb_grpc.FeedbackStub(channel)

    async def recommend(self, request: pb.RecommendRequest, timeout: float) -> pb.RecommendResponse:
        return await self.recommender.Recommend(request, timeout=timeout)

    async def send(self, events: list[fpb.FeedbackEvent], timeout: float) -> fpb.SendResponse:
        return await self.feedback.Send(fpb.SendRequest(events=events), timeout=timeout)


class Simulation:
    def __init__(self, target: str | Service, population: Population, clicks: ClickModel,
                 config: SimulationConfig, end_s: float | None = None, run_id: str | None = None):
        """target: the Recommend API's address, or a Service."""
        self.target = target
        self.population = population
        self.model = clicks
        self.config = config
        self.end_s = int(end_s or time.time())
        self.start_s = self.end_s - (config.pre_days + config.days) * DAY_S
        self.run_id = run_id or f"{config.seed}-{self.start_s}"
        self.result = SimulationResult()

    async def run(self, on_user_day: Callable[[], None] = lambda: None) -> SimulationResult:
        t0 = time.monotonic()
        if isinstance(self.target, str):
            async with grpc.aio.insecure_channel(self.target) as channel:
                await self._days(GrpcService(channel), on_user_day)
        else:
            await self._days(self.target, on_user_day)
        self.result.seconds = time.monotonic() - t0
        return self.result

    async def _days(self, service: Service, on_user_day: Callable[[], None]) -> None:
        for day, users in enumerate(self._schedule()):
            queue: asyncio.Queue[int] = asyncio.Queue()
            for j in users:
                queue.put_nowait(j)

            async def worker(day: int = day, queue: asyncio.Queue[int] = queue) -> None:
                while not queue.empty():
                    await self._user_day(service, queue.get_nowait(), day)
                    on_user_day()

            await asyncio.gather(*(worker() for _ in range(min(self.config.concurrency, len(users)))))

    def _schedule(self) -> list[list[int]]:
        c = self.config
        return schedule(self.population.activity, c.days, c.return_rate, c.seed, c.pre_days)

    def total_user_days(self) -> int:
        return sum(map(len, self._schedule()))

    async def _user_day(self, service: Service, j: int, day: int) -> None:
        cfg, pop, res = self.config, self.population, self.result
        rng = np.random.default_rng([cfg.seed, 3, j, day])
        user = pop.user_id(j)
        t = self.start_s + day * DAY_S + float(rng.uniform(0, DAY_S - 4 * 3600))
        organic = pop.organic(rng, j, int(rng.poisson(cfg.organic * pop.activity[j])))
        events = [interaction(user, item, "view", event_id=f"sim-{self.run_id}-{user}-{day}-o{n}", timestamp=t + 30 * n)
                  for n, item in enumerate(organic)]
        res.organic += len(events)
        if events:
            await self._send(service, events)
        if day < cfg.pre_days:
            return
        t += 30 * len(events) + 60
        propensity = min(2.0, float(pop.activity[j]) ** 0.5)
        for s in range(1 + int(rng.poisson(cfg.extra_sessions))):
            request = pb.RecommendRequest(user_id=user, k=cfg.k, context=pb.Context(surface=cfg.surface))
            request.context.time.FromNanoseconds(int(t * 1e9))
            try:
                resp = await service.recommend(request, cfg.timeout_s)
            except grpc.aio.AioRpcError:
                res.errors += 1
                continue
            res.requests += 1
            items = [it.item_id for it in resp.items]
            z = pop.z(j, items)
            clicked, bought = self.model.respond(rng, z, propensity)
            expected = float(self.model.click_probability(z, propensity).sum())
            for a in resp.assignments:
                if not a.forced:
                    tally = res.arms[f"{a.experiment}={a.arm}"]
                    tally.units.add(user)
                    tally.requests += 1
                    tally.impressions += len(items)
                    tally.clicks += int(clicked.sum())
                    tally.purchases += int(bought.sum())
                    tally.expected_clicks += expected
            key = f"sim-{self.run_id}-{user}-{day}-{s}"
            events = []
            for p in np.flatnonzero(clicked).tolist():
                events.append(interaction(user, items[p], "click", event_id=f"{key}-c{p}", request_id=resp.request_id,
                                          timestamp=t + 5 + 3 * p))
                if bought[p]:
                    events.append(interaction(user, items[p], "purchase", event_id=f"{key}-b{p}",
                                              request_id=resp.request_id, timestamp=t + 120 + 3 * p))
            res.clicks += int(clicked.sum())
            res.purchases += int(bought.sum())
            if events:
                await self._send(service, events)
            t = min(t + 1800 + float(rng.exponential(3600)), self.end_s - 600)

    async def _send(self, service: Service, events: list[fpb.FeedbackEvent]) -> None:
        try:
            resp = await service.send(events, self.config.timeout_s * 2)
            self.result.rejected += len(resp.rejected)
        except grpc.aio.AioRpcError:
            self.result.errors += 1
