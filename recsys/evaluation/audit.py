"""The parts of `recsys eval` beyond the per-system metrics table: AUC for every system, and the
fairness and popularity-bias audit. Kept out of runner.py so the runner stays a readable script of
split → train → recommend → measure; the metrics themselves are pure functions in auc.py,
popularity.py and fairness.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from recsys.evaluation import baselines
from recsys.evaluation.auc import AucSample, pipeline_rankings, scores_from_rankings
from recsys.evaluation.fairness import fairness, resolve_attributes, user_attributes
from recsys.evaluation.popularity import popularity_bias, short_head
from recsys.pipeline.offline import OfflineStack

Lists = Mapping[str, Sequence[str]]
SERVED = ("pipeline", "pipeline_no_diversity")


def system_aucs(
    sample: AucSample,
    recs: Mapping[str, Lists],
    stack: OfflineStack,
    retrieval_rankings: Lists,
    data: baselines.Interactions,
    scorers: Mapping[str, baselines.ScoreFn],
    on_user: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Mean per-user AUC of every system over the same sampled items (see auc.py for the rankings)."""
    users = list(sample.items)
    served = {name: recs[name] for name in SERVED if name in recs}
    rankings: dict[str, Lists] = dict(pipeline_rankings(stack, users, served, on_user)) if served else {}
    if "retrieval" in recs:
        rankings["retrieval"] = retrieval_rankings
    out = {}
    for name in recs:
        if name in rankings:
            out[name] = sample.mean_auc(scores_from_rankings(rankings[name], sample))
        elif name in scorers:
            out[name] = sample.mean_auc(baselines.score_items(data, scorers[name], sample.items))
    return out


def parse_groups(spec: str | None, users: pd.DataFrame | None) -> list[str] | None:
    """`recsys eval --groups a,b` (or "all") checked against the users table; None keeps the default."""
    if not spec:
        return None
    return resolve_attributes(user_attributes(users), [g.strip() for g in spec.split(",") if g.strip()])


def audit(
    recs: Mapping[str, Lists],
    truth: Mapping[str, set[str]],
    train: pd.DataFrame,
    users: pd.DataFrame | None,
    catalog: Sequence[str],
    popularity: Mapping[str, int],
    k: int,
    attributes: Sequence[str] | None = None,
) -> dict:
    """{"popularity_bias": {"training": ..., system: ...}, "fairness": {attribute: {system: ...}},
    "fairness_attributes": [...]} for the test users' top-k lists."""
    hist = train.drop_duplicates(["user_id", "item_id"]).groupby("user_id")["item_id"].agg(list)
    histories = {u: hist.get(u, []) for u in truth}
    attrs = user_attributes(users)
    chosen = resolve_attributes(attrs, attributes) if len(attrs.columns) else []
    head = short_head(popularity)
    return {
        "popularity_bias": popularity_bias(recs, histories, popularity, catalog, k),
        "fairness": fairness(recs, truth, attrs, chosen, popularity, head, k),
        "fairness_attributes": chosen,
    }
