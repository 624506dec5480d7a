"""The report's calibration on simulated experiments through the simulation's in-process fast path
(recsys/simulation/fast_path.py): the population, click model, schedule, routing, stream records and
analysis are the ones `recsys simulate` and the cluster use; only the ranker is replaced by lists ranked
by the users' true affinity plus noise.

A/A: over 240 experiments read after every simulated day, the false-positive rate at α = 0.05 must lie in
[3%, 7%] and SRM false alarms at most 1%. A/B: less noise (a better ranker) is found better."""

from __future__ import annotations

import asyncio
import random

import pytest

from recsys.data.synthetic import generate_world
from recsys.experiments.analysis import analyse, collect
from recsys.experiments.config import parse_config
from recsys.simulation.click_model import ClickModel
from recsys.simulation.driver import Simulation, SimulationConfig
from recsys.simulation.fast_path import InProcessService, noisy_truth_policy
from recsys.simulation.population import Population

DAYS, UNITS, A_A_RUNS = 5, 300, 240
FILE = """\
layers:
  - name: models
    salt: layer-{k}
    experiments:
      - name: exp
        salt: exp-{k}
        status: running
        buckets: [0, 10000]
        coverage: 1
        arms:
          - {{name: control, weight: 1, control: true, model_version: a}}
          - {{name: treatment, weight: 1, model_version: b}}
"""


@pytest.fixture(scope="module")
def world():
    return generate_world(n_users=600, n_items=300, n_interactions=6000, n_categories=6, seed=5)


def _run(world, k: int, treatment_noise: float, control_noise: float = 1.0):
    pop = Population.of(world, UNITS, seed=k)
    noise = {"a": control_noise, "b": treatment_noise}
    service = InProcessService(parse_config(FILE.format(k=k)),
                               noisy_truth_policy(pop, lambda route: noise[route.model_version], seed=k))
    sim = Simulation(service, pop, ClickModel(), SimulationConfig(days=DAYS, seed=k), end_s=1.8e9)
    asyncio.run(sim.run())
    return analyse("exp", collect("exp", service.exposures, service.events), ["control", "treatment"], [1, 1],
                   "control", planned_days=DAYS)


def test_a_a_read_every_day_keeps_its_false_positive_rate_and_srm_stays_quiet(world) -> None:
    reports = [_run(world, k, treatment_noise=1.0) for k in range(A_A_RUNS)]
    positives = sum(bool(r.decisions["treatment"]) for r in reports)
    srm = sum(r.srm.mismatch for r in reports)
    assert 0.03 <= positives / A_A_RUNS <= 0.07, positives
    assert srm / A_A_RUNS <= 0.01, srm
    # the users really clicked: the test is not passing on empty data
    assert min(sum(a.clicks for a in r.arms) for r in reports) > 100


def test_a_better_ranker_is_found_better(world) -> None:
    reports = [_run(world, 1000 + k, treatment_noise=0.5) for k in range(10)]
    assert sum(bool(r.decisions["treatment"]) and r.comparisons["treatment"]["clicks_per_unit"].diff > 0
               for r in reports) >= 8


def _losing(share: float):
    """A logging fault: the treatment's exposures are lost with probability `share`."""
    draws = random.Random(1)
    return lambda route: route.model_version == "b" and draws.random() < share


def test_an_arm_that_loses_five_percent_of_its_exposures_is_flagged() -> None:
    """20,000 users, one visit each; the logging fault drops 5% of the treatment's exposures at random."""
    big = generate_world(n_users=20_000, n_items=200, n_interactions=20_000, n_categories=4, seed=6)
    pop = Population.of(big, 20_000, seed=0)
    config = SimulationConfig(days=1, pre_days=0, return_rate=0.0, extra_sessions=0.0, organic=0.0, seed=0,
                              concurrency=64)
    results = {}
    for name, loss in (("intact", 0.0), ("lossy", 0.05)):
        service = InProcessService(parse_config(FILE.format(k="srm")), noisy_truth_policy(pop, lambda r: 1.0),
                                   drop=_losing(loss))
        asyncio.run(Simulation(service, pop, ClickModel(), config, end_s=1.8e9).run())
        results[name] = analyse("exp", collect("exp", service.exposures, service.events), ["control", "treatment"],
                                [1, 1], "control")
    assert not results["intact"].srm.mismatch
    assert results["lossy"].srm.mismatch and results["lossy"].verdict.startswith("sample-ratio mismatch")
