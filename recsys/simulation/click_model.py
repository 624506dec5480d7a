"""A position-biased click model (the examination hypothesis): a user looks at position p with
probability (p + 1) ** -decay, and clicks what they looked at with a probability that rises with their true
affinity for it (a logistic in its z-score) times their own propensity; a click becomes a purchase with a
second, steeper logistic. Known to the simulation, unknown to the models: what an arm's list is really
worth is the expected clicks it gets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class ClickModel:
    position_decay: float = 1.0      # P(examine position p) = (p + 1) ** -decay, p from 0
    click_threshold: float = 2.0     # the z-score an examined item is clicked at half the time
    click_slope: float = 2.0
    purchase_threshold: float = 2.8  # the same, for a purchase after a click
    purchase_slope: float = 2.5

    def examine(self, n: int) -> np.ndarray:
        return (np.arange(n) + 1.0) ** -self.position_decay

    def click_probability(self, z: np.ndarray, propensity: float = 1.0) -> np.ndarray:
        """P(click) at each position of a list whose items have true affinity z-scores z."""
        attract = _sigmoid(self.click_slope * (z - self.click_threshold))
        return self.examine(len(z)) * np.minimum(1.0, propensity * attract)

    def respond(self, rng: np.random.Generator, z: np.ndarray, propensity: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray]:
        """Which positions are clicked, and which clicks become purchases."""
        clicked = rng.random(len(z)) < self.click_probability(z, propensity)
        bought = clicked & (rng.random(len(z)) < _sigmoid(self.purchase_slope * (z - self.purchase_threshold)))
        return clicked, bought
