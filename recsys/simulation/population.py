"""The simulated users: the synthetic generator's users with their true tastes (recsys.data.synthetic.World).

A user's true affinity for an item is taste . item vector, expressed as a z-score against the affinities of
random (user, item) pairs, so the click model's thresholds mean the same on any generated world. Users
differ in activity (lognormal, mean 1): it drives both their organic browsing and their click propensity,
which is what makes pre-experiment activity a useful CUPED covariate, as in real traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.synthetic import World

_CALIBRATION_PAIRS = 200_000
_ORGANIC_CANDIDATES = 16  # as the generator: a few popular candidates, the user picks by taste


@dataclass
class Population:
    world: World
    users: np.ndarray     # indices into world.taste of the simulated users
    activity: np.ndarray  # per simulated user, mean 1
    mean: float           # affinity of random pairs: the z-score's centre
    std: float

    @classmethod
    def of(cls, world: World, n_users: int, seed: int = 0) -> Population:
        """n_users of the world's users (a seeded sample; all of them when n_users >= their count)."""
        total = len(world.taste)
        if n_users < 1:
            raise ValueError(f"the simulation needs at least one user, got {n_users}")
        rng = np.random.default_rng([seed, 1])
        users = np.sort(rng.choice(total, size=min(n_users, total), replace=False))
        activity = rng.lognormal(0.0, 0.75, len(users))
        pairs = rng.integers(0, [total, len(world.item_vectors)], size=(_CALIBRATION_PAIRS, 2))
        aff = np.einsum("nd,nd->n", world.taste[pairs[:, 0]], world.item_vectors[pairs[:, 1]])
        return cls(world, users, activity / activity.mean(), float(aff.mean()), float(aff.std()))

    def __len__(self) -> int:
        return len(self.users)

    def user_id(self, j: int) -> str:
        return f"u{self.users[j]}"

    def z_all(self, j: int) -> np.ndarray:
        """True affinity z-scores of user j for every item of the world (item i is f"i{i}")."""
        return (self.world.item_vectors @ self.world.taste[self.users[j]] - self.mean) / self.std

    def z(self, j: int, item_ids: list[str]) -> np.ndarray:
        """True affinity z-scores of user j for the items; an item the world does not know gets -inf."""
        index = np.array([_item_index(i, len(self.world.item_vectors)) for i in item_ids], dtype=np.int64)
        known = index >= 0
        out = np.full(len(item_ids), -np.inf)
        if known.any():
            aff = self.world.item_vectors[index[known]] @ self.world.taste[self.users[j]]
            out[known] = (aff - self.mean) / self.std
        return out

    def organic(self, rng: np.random.Generator, j: int, n: int) -> list[str]:
        """n items user j finds on their own (search, browsing): popular candidates, picked by taste with
        the generator's choice model."""
        if n <= 0:
            return []
        w = self.world
        p = w.popularity / w.popularity.sum()
        cands = rng.choice(len(p), size=(n, _ORGANIC_CANDIDATES), p=p)
        scores = w.item_vectors[cands] @ w.taste[self.users[j]] / w.temperature
        pick = cands[np.arange(n), np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)]
        return [f"i{i}" for i in pick.tolist()]


def _item_index(item_id: str, n_items: int) -> int:
    if item_id[:1] == "i" and item_id[1:].isdigit():
        i = int(item_id[1:])
        return i if i < n_items else -1
    return -1
