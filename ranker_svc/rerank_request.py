"""A Recommend request's re-ranker fields (reranker, calibration_lambda, category_cap, longtail_beta): checked
with the rule set shared with experiment arms and the pipeline config, and passed on as pipeline overrides.
Kept apart from server.py so the request path gains two calls, not a block of checks."""

from __future__ import annotations

from typing import Any

from recsys.ranking.rerankers import problem as rerank_problem
from recsys.v1 import recommender_pb2 as pb

FIELDS = ("reranker", "calibration_lambda", "category_cap", "longtail_beta")


def overrides(request: pb.RecommendRequest) -> dict[str, Any]:
    """The re-ranker fields the request sets (unset ones leave the server's or the arm's value)."""
    return {f: getattr(request, f) for f in FIELDS if request.HasField(f)}


def problem(request: pb.RecommendRequest) -> str | None:
    """A message naming the first bad re-ranker field, or None."""
    bad = rerank_problem(**overrides(request))
    return f"{bad[0]} {bad[1]}" if bad else None
