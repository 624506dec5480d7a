"""The re-rankers a list can go through and the one rule set for their settings.

Request validation (ranker_svc), experiment arms (recsys/experiments/config.py) and the pipeline config all
check with `problem`, so a value one of them accepts the others accept too.
"""

from __future__ import annotations

import math

from recsys.settings import RERANKERS

__all__ = ["RERANKERS", "problem"]


def _unit_problem(name: str, value: float | None) -> tuple[str, str] | None:
    if value is not None and (math.isnan(value) or not 0.0 <= value <= 1.0):
        return name, f"must be in [0, 1], got {value}"
    return None


def problem(reranker: str | None = None, calibration_lambda: float | None = None,
            category_cap: int | None = None, longtail_beta: float | None = None) -> tuple[str, str] | None:
    """(field, reason) for the first bad value, or None; None values are not checked."""
    if reranker is not None and reranker not in RERANKERS:
        return "reranker", f"must be one of {', '.join(RERANKERS)}, got {reranker!r}"
    if bad := _unit_problem("calibration_lambda", calibration_lambda):
        return bad
    if category_cap is not None and category_cap < 1:
        return "category_cap", f"must be >= 1, got {category_cap}"
    return _unit_problem("longtail_beta", longtail_beta)
