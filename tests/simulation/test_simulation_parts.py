"""The simulation's parts, each against what it promises: the click model's position bias and its
monotone response to true affinity, the population's truth and organic browsing, and the schedule."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.synthetic import generate, generate_world
from recsys.simulation.click_model import ClickModel
from recsys.simulation.driver import SimulationConfig, schedule
from recsys.simulation.population import Population


@pytest.fixture(scope="module")
def world():
    return generate_world(n_users=300, n_items=400, n_interactions=5000, n_categories=6, seed=1)


def test_the_world_is_the_dataset_generate_gives_plus_its_truth(world) -> None:
    assert world.dataset.fingerprint() == generate(n_users=300, n_items=400, n_interactions=5000, n_categories=6,
                                                   seed=1).fingerprint()
    assert world.taste.shape == (300, 16) and world.item_vectors.shape == (400, 16)
    np.testing.assert_allclose(np.linalg.norm(world.item_vectors, axis=1), 1.0, rtol=1e-5)


def test_clicks_fall_with_position_and_rise_with_affinity() -> None:
    m = ClickModel()
    assert np.all(np.diff(m.examine(10)) < 0) and m.examine(3)[0] == 1.0
    p = m.click_probability(np.full(10, 2.0))
    np.testing.assert_allclose(p, 0.5 * m.examine(10))  # at the threshold, half of what is looked at
    z = np.linspace(-3, 5, 10)
    at_top = np.array([m.click_probability(np.array([x]))[0] for x in z])
    assert np.all(np.diff(at_top) > 0)
    assert m.click_probability(np.array([np.inf]), propensity=3.0)[0] == 1.0  # capped at certainty


def test_drawn_clicks_match_the_model_and_purchases_follow_clicks() -> None:
    m, rng = ClickModel(), np.random.default_rng(0)
    z = np.array([3.0, 2.5, 1.0, 0.0, 2.0])
    draws = [m.respond(rng, z, 1.0) for _ in range(20_000)]
    clicks = np.mean([c for c, _ in draws], axis=0)
    np.testing.assert_allclose(clicks, m.click_probability(z), atol=0.012)
    assert all(not (b & ~c).any() for c, b in draws)


def test_the_truth_ranks_a_users_own_favourites_high(world) -> None:
    pop = Population.of(world, 100, seed=0)
    z = pop.z_all(0)
    assert abs(pop.mean) < 1.0 and pop.std > 0
    assert z.max() > 2.0 and np.median(z) < z.max() - 1.5
    best = f"i{int(np.argmax(z))}"
    np.testing.assert_allclose(pop.z(0, [best, "i0"]), [z.max(), z[0]], rtol=1e-6)
    assert pop.z(0, ["new-item", "i99999"]).tolist() == [-np.inf, -np.inf]  # the world does not know them


def test_organic_browsing_follows_taste_and_is_seeded(world) -> None:
    pop = Population.of(world, 100, seed=0)
    picks = pop.organic(np.random.default_rng(1), 0, 400)
    assert picks == pop.organic(np.random.default_rng(1), 0, 400)
    chosen = pop.z(0, picks).mean()
    random = pop.z(0, [f"i{i}" for i in np.random.default_rng(2).integers(0, 400, 400)]).mean()
    assert chosen > random + 0.5


def test_the_sample_is_seeded_and_activity_has_mean_one(world) -> None:
    a, b = Population.of(world, 100, seed=4), Population.of(world, 100, seed=4)
    assert a.users.tolist() == b.users.tolist() and len(set(a.users.tolist())) == 100
    assert a.activity.mean() == pytest.approx(1.0)
    assert len(Population.of(world, 10_000)) == 300
    with pytest.raises(ValueError, match="at least one user"):
        Population.of(world, 0)


def test_every_user_arrives_once_in_the_experiment_and_heavy_users_return_more() -> None:
    activity = np.r_[np.full(500, 0.25), np.full(500, 4.0)]
    days = schedule(activity, days=5, return_rate=0.3, seed=0, pre_days=2)
    assert len(days) == 7
    first = {}
    for d, users in enumerate(days):
        for u in users:
            first.setdefault(u, d)
    in_experiment = {u for d in range(2, 7) for u in days[d]}
    assert in_experiment == set(range(1000))
    active = np.zeros(1000)
    for users in days:
        active[users] += 1
    assert active[500:].mean() > active[:500].mean() + 0.5  # rates 0.6 against 0.15
    assert days == schedule(activity, days=5, return_rate=0.3, seed=0, pre_days=2)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(days=0)
    with pytest.raises(ValueError, match="return_rate"):
        SimulationConfig(return_rate=1.5)
