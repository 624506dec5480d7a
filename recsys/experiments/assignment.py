"""Deterministic, sticky assignment of a unit (a user id, or a context key such as a session id) to an
experiment's arm, specified in docs/experiments.md precisely enough to reimplement elsewhere; the
golden vectors in tests/data/assignment_vectors.json pin it.

    hash(salt, unit)   = fnv1a32(decimal(fnv1a32(utf8(salt + ":" + unit))))   (hashed twice: FNV's low
                         bits of short, similar strings are poorly mixed; GrowthBook's v2 does the same)
    bucket(salt, unit) = hash(salt, unit) mod 10,000

A layer's salt picks the layer bucket; an experiment owns a range [lo, hi) of its layer's buckets, so the
experiments of one layer never share a unit and layers (different salts) are independent. Coverage c
admits the first round(c * (hi - lo)) buckets of the range: raising it only adds units. The experiment's
own salt picks the arm bucket, compared with the arms' cumulative weights scaled to 10,000: coverage
never moves a unit between arms. A global holdout is one more salt and a share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BUCKETS = 10_000
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes) -> int:
    """32-bit FNV-1a."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def unit_hash(salt: str, unit: str) -> int:
    return fnv1a32(str(fnv1a32(f"{salt}:{unit}".encode())).encode())


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket in [0, 10,000) under `salt`."""
    return unit_hash(salt, unit) % BUCKETS


def arm_bounds(weights: Sequence[float]) -> list[int]:
    """Cumulative upper bounds of each arm in [0, 10,000]: arm i takes buckets [bounds[i-1], bounds[i]).
    Weights need not sum to 1 (they are normalised); each is rounded once, on the cumulative sum, so the
    last bound is exactly 10,000."""
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"arm weights must be non-negative with a positive sum, got {list(weights)}")
    total, acc, bounds = float(sum(weights)), 0.0, []
    for w in weights:
        acc += w
        bounds.append(round(acc / total * BUCKETS))
    bounds[-1] = BUCKETS
    return bounds


def covered_range(lo: int, hi: int, coverage: float) -> tuple[int, int]:
    """The buckets of [lo, hi) a coverage in [0, 1] admits: a prefix, so a ramp only adds units."""
    if not 0 <= lo <= hi <= BUCKETS:
        raise ValueError(f"layer range must satisfy 0 <= lo <= hi <= {BUCKETS}, got [{lo}, {hi})")
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage}")
    return lo, lo + round(coverage * (hi - lo))


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a unit landed: its layer bucket, whether the experiment admits it, its arm bucket and arm
    index (None when not admitted)."""

    layer_bucket: int
    arm_bucket: int
    arm: int | None


def assign(unit: str, layer_salt: str, layer_range: tuple[int, int], coverage: float, experiment_salt: str,
           weights: Sequence[float]) -> Assignment:
    """The unit's arm in one experiment (see the module docstring)."""
    lo, hi = covered_range(layer_range[0], layer_range[1], coverage)
    layer_b = bucket(layer_salt, unit)
    arm_b = bucket(experiment_salt, unit)
    if not lo <= layer_b < hi:
        return Assignment(layer_b, arm_b, None)
    bounds = arm_bounds(weights)
    arm = next(i for i, bound in enumerate(bounds) if arm_b < bound)
    return Assignment(layer_b, arm_b, arm)


def in_holdout(unit: str, salt: str, share: float) -> bool:
    """The global holdout: the units whose bucket under `salt` is below share * 10,000."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"holdout share must be in [0, 1], got {share}")
    return bucket(salt, unit) < round(share * BUCKETS)
