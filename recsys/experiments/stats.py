"""The statistics of an experiment report: sample-ratio mismatch, CUPED, Welch's t-test, and an
always-valid p-value (mSPRT) so that reading the report every day does not inflate false positives.
Distributions come from scipy; nothing here is hand-rolled beyond the formulas cited.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

SRM_ALPHA = 0.001  # GrowthBook's and Statsig's threshold
SRM_MIN_EXPECTED = 20  # below this many expected units in an arm the chi-square is not trusted


@dataclass(frozen=True)
class SampleRatio:
    counts: tuple[int, ...]
    expected: tuple[float, ...]
    p_value: float
    mismatch: bool  # p < SRM_ALPHA with enough units to trust the test


def sample_ratio(counts: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Chi-square goodness of fit of the units per arm against the configured weights."""
    n = int(sum(counts))
    w = np.asarray(weights, dtype=float) / float(sum(weights))
    expected = w * n
    if n == 0 or (expected < SRM_MIN_EXPECTED).any():
        return SampleRatio(tuple(int(c) for c in counts), tuple(expected), 1.0, False)
    p = float(stats.chisquare(np.asarray(counts, dtype=float), expected).pvalue)
    return SampleRatio(tuple(int(c) for c in counts), tuple(float(e) for e in expected), p, p < SRM_ALPHA)


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """θ = cov(y, x) / var(x) over all units (Deng et al. 2013); 0 when the covariate is constant."""
    vx = float(np.var(x))
    return float(np.cov(y, x, bias=True)[0, 1] / vx) if vx > 0 else 0.0


def cuped_adjust(y: np.ndarray, x: np.ndarray, theta: float, x_mean: float) -> np.ndarray:
    """y − θ (x − mean x): the same mean, less variance when x predicts y."""
    return y - theta * (x - x_mean)


@dataclass(frozen=True)
class Comparison:
    control_mean: float
    treatment_mean: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float           # Welch's t-test, fixed horizon
    always_valid_p: float    # mSPRT, valid however often it is read
    relative: float          # diff / control mean (nan when the control mean is 0)
    variance_reduction: float  # 1 − var(adjusted) / var(raw) of the difference, 0 without CUPED
    se: float = 0.0          # standard error of the (adjusted) difference


def welch(control: np.ndarray, treatment: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """Difference of means, its (1 − α) interval (Welch–Satterthwaite degrees of freedom) and p-value."""
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    diff = float(t.mean() - c.mean())
    vc, vt = c.var(ddof=1) / len(c), t.var(ddof=1) / len(t)
    se = math.sqrt(vc + vt)
    if se == 0:
        return diff, diff, diff, 1.0 if diff == 0 else 0.0
    df = (vc + vt) ** 2 / (vc ** 2 / (len(c) - 1) + vt ** 2 / (len(t) - 1))
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(stats.ttest_ind(t, c, equal_var=False).pvalue)
    return diff, diff - half, diff + half, p


def msprt_p(diff: float, variance: float, tau2: float) -> float:
    """One look of the mixture SPRT for a difference of means with a normal mixing distribution
    N(0, τ²) (Johari, Pekelis, Walsh 2017): 1 / Λ, with
    Λ = sqrt(V / (V + τ²)) · exp(τ² · diff² / (2 V (V + τ²))) and V the variance of the difference."""
    if variance <= 0:
        return 1.0 if diff == 0 else 0.0
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + tau2 * diff ** 2 / (2 * variance * (variance + tau2))
    return float(min(1.0, math.exp(-log_lambda)))


def always_valid(p_values: Sequence[float]) -> float:
    """The always-valid p-value after a series of looks: the running minimum of the mSPRT p-values."""
    return float(min([1.0, *p_values]))


def compare(control: np.ndarray, treatment: np.ndarray, *, covariate_control: np.ndarray | None = None,
            covariate_treatment: np.ndarray | None = None, looks: Sequence[tuple[float, float]] = (),
            alpha: float = 0.05, tau: float | None = None) -> Comparison:
    """Treatment against control on per-unit values, CUPED-adjusted when covariates are given.
    `looks` are the (diff, variance) of earlier reads, for the always-valid p-value; τ defaults to a
    tenth of the pooled standard deviation (effects of that size are what the test is most sensitive to)."""
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    raw_var = c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t)
    reduction = 0.0
    if covariate_control is not None and covariate_treatment is not None:
        x = np.concatenate([covariate_control, covariate_treatment]).astype(float)
        theta = cuped_theta(np.concatenate([c, t]), x)
        c = cuped_adjust(c, np.asarray(covariate_control, dtype=float), theta, float(x.mean()))
        t = cuped_adjust(t, np.asarray(covariate_treatment, dtype=float), theta, float(x.mean()))
        adj_var = c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t)
        reduction = 1.0 - adj_var / raw_var if raw_var > 0 else 0.0
    diff, lo, hi, p = welch(c, t, alpha)
    variance = c.var(ddof=1) / len(c) + t.var(ddof=1) / len(t)
    pooled_sd = float(np.sqrt((c.var(ddof=1) + t.var(ddof=1)) / 2))
    tau2 = (tau if tau is not None else max(pooled_sd, 1e-12) * 0.1) ** 2
    sequential = always_valid([msprt_p(d, v, tau2) for d, v in looks] + [msprt_p(diff, variance, tau2)])
    cm = float(np.mean(control))
    return Comparison(cm, float(np.mean(treatment)), diff, lo, hi, p, sequential,
                      diff / cm if cm else float("nan"), reduction, math.sqrt(variance))


def obrien_fleming_spending(t: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-like alpha spending: α(t) = 2 − 2 Φ(z_{1−α/2} / √t), α(1) = α."""
    if t <= 0:
        return 0.0
    return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0))))


def sequential_bounds(fractions: Sequence[float], alpha: float = 0.05, grid: int = 2001) -> list[float]:
    """Two-sided z boundaries c_k for looks at information fractions t_1 < … < t_K (≤ 1) such that
    P(|Z_j| ≥ c_j for some j ≤ k) = α(t_k) under no effect: the group-sequential design a report read
    after every day keeps its false-positive rate with (exactly α over the planned horizon).

    Computed by recursive numerical integration (Armitage, McPherson and Rowe 1969) of the score
    S_k = Z_k √t_k, a Brownian motion in information time: the density of the paths that have not
    crossed is carried on a grid from look to look, convolved with the increment N(0, t_k − t_{k−1})."""
    fr = [float(f) for f in fractions]
    if any(b <= a for a, b in zip(fr, fr[1:], strict=False)) or not fr or fr[0] <= 0 or fr[-1] > 1 + 1e-9:
        raise ValueError(f"information fractions must increase within (0, 1], got {fr}")
    s_max = 8.0 * math.sqrt(fr[-1])
    s = np.linspace(-s_max, s_max, grid)
    ds = s[1] - s[0]
    half = grid // 2
    radius = s[::-1][: half + 1]  # from the edge in to 0
    density: np.ndarray | None = None
    spent, prev_t, bounds = 0.0, 0.0, []
    for t in fr:
        scale = math.sqrt(t - prev_t)
        if density is None:
            density = stats.norm.pdf(s, scale=scale)
        else:  # f_new(s_j) = sum_i f(s_i) phi(s_j - s_i) ds
            kernel = stats.norm.pdf(np.arange(-(grid - 1), grid) * ds, scale=scale) * ds
            density = np.convolve(density, kernel, mode="full")[grid - 1: 2 * grid - 1]
        target = obrien_fleming_spending(t, alpha) - spent
        tails = np.cumsum(density[::-1][: half + 1] + density[: half + 1]) * ds  # mass with |S| >= radius
        idx = int(np.searchsorted(tails, target, side="right"))
        if idx == 0:
            b = float(radius[0])
        elif idx > half:
            b = 0.0
        else:  # interpolate between the grid radii around the target mass
            lo_mass, hi_mass = tails[idx - 1], tails[idx]
            frac = (target - lo_mass) / (hi_mass - lo_mass) if hi_mass > lo_mass else 0.0
            b = float(radius[idx - 1] + frac * (radius[idx] - radius[idx - 1]))
        bounds.append(b / math.sqrt(t))
        crossing = np.abs(s) >= b
        spent += float(density[crossing].sum() * ds)
        density = np.where(crossing, 0.0, density)
        prev_t = t
    return bounds


@functools.lru_cache(maxsize=256)
def _cached_bounds(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    return tuple(sequential_bounds(fractions, alpha))


@dataclass(frozen=True)
class SequentialDecision:
    bounds: tuple[float, ...]
    crossed_at: int | None  # index of the first look whose |z| reached its bound, None if none did

    @property
    def significant(self) -> bool:
        return self.crossed_at is not None


def group_sequential(z_values: Sequence[float], fractions: Sequence[float], alpha: float = 0.05) -> SequentialDecision:
    """The decision after the looks so far: significant once any |z_k| ≥ c_k (sequential_bounds). With
    information fractions planned over the experiment's horizon (e.g. day k of D: k / D), reading after
    every look keeps the false-positive rate at α over the whole horizon."""
    if len(z_values) != len(fractions):
        raise ValueError("one information fraction per look")
    bounds = _cached_bounds(tuple(float(f) for f in fractions), float(alpha))
    crossed = next((k for k, (z, c) in enumerate(zip(z_values, bounds, strict=True)) if abs(z) >= c), None)
    return SequentialDecision(tuple(bounds), crossed)
