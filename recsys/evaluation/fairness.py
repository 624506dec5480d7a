"""Accuracy and exposure by user group, with fairlearn's MetricFrame.

A mean over all users hides who pays for it: a system can serve men well and women badly and still
report a good nDCG. Splitting per-user metrics by a user attribute (gender, age band, any column of the
users table) and reporting the gap between the best and the worst group shows it. fairlearn's
`MetricFrame` does the grouping, the difference (max − min) and the ratio (min / max); the per-user
values are passed as sample parameters, since a recommender's metrics are per user, not per prediction.

Metrics per group: nDCG@k and recall@k (accuracy), and the popularity exposure of the group's lists:
mean recommended popularity (ARP) and long-tail share (see `popularity.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from recsys.evaluation.popularity import user_arp, user_long_tail_share
from recsys.ranking.metrics import ndcg_at_k, recall_at_k

Lists = Mapping[str, Sequence[str]]
UNKNOWN = "unknown"
DEFAULT_ATTRIBUTES = ("gender", "age_band")
MAX_LEVELS = 50  # an attribute with more distinct values (a zip code, an id) is not a group


def age_band(label: str) -> str:
    """Merge an age bucket ("18-24", "65+") or an age ("31") into the bands <25, 25-34, 35-44, 45+.

    ML-100K keeps only buckets; their edges (18, 25, 35, 45, ...) line up with the bands, so a bucket's
    lower bound decides its band.
    """
    m = re.match(r"\s*(\d+)", str(label))
    if not m:
        return UNKNOWN
    lo = int(m.group(1))
    return "<25" if lo < 25 else "25-34" if lo < 35 else "35-44" if lo < 45 else "45+"


def user_attributes(users: pd.DataFrame | None) -> pd.DataFrame:
    """The users table indexed by user id, as strings, plus `age_band` derived from `age_bucket`/`age`."""
    if users is None or "user_id" not in users:
        return pd.DataFrame(index=pd.Index([], name="user_id"))
    df = users.drop_duplicates("user_id").set_index("user_id").astype(str)
    source = "age_bucket" if "age_bucket" in df else "age" if "age" in df else None
    if source and "age_band" not in df:
        df["age_band"] = df[source].map(age_band)
    return df


def resolve_attributes(attrs: pd.DataFrame, requested: Sequence[str] | None) -> list[str]:
    """The attributes to audit: the requested ones ("all": every column with 2..50 levels), by default
    gender and age band when present, else every such column. An unknown name is a ValueError."""
    usable = [c for c in attrs.columns if 2 <= attrs[c].nunique() <= MAX_LEVELS]
    if requested is None:
        return [a for a in DEFAULT_ATTRIBUTES if a in usable] or usable
    if list(requested) == ["all"]:
        return usable
    missing = [a for a in requested if a not in attrs.columns]
    if missing:
        raise ValueError(f"unknown user attribute(s) {missing}; the users table has {list(attrs.columns)}")
    return list(requested)


def _mean(y_true: np.ndarray, y_pred: np.ndarray, v: np.ndarray) -> float:
    """MetricFrame's metric signature; the per-user values come in as the sample parameter v."""
    v = np.asarray(v, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def group_metrics(per_user: Mapping[str, Mapping[str, float]], groups: Mapping[str, str]) -> dict:
    """Per-group means of per-user metrics, the overall mean, and each metric's gap across groups.

    per_user: metric → {user: value} (NaN: not defined for that user); groups: user → group label.
    Returns {"groups": {group: {"users": n, metric: mean}}, "overall": {metric: mean},
    "gap": {metric: {"difference": max − min, "ratio": min / max, "max_group", "min_group"}}}.
    """
    users = sorted(groups)
    labels = pd.Series([groups[u] for u in users], name="group")
    zeros = np.zeros(len(users))
    mf = MetricFrame(
        metrics={m: _mean for m in per_user},
        y_true=zeros,
        y_pred=zeros,
        sensitive_features=labels,
        sample_params={m: {"v": np.array([vals.get(u, np.nan) for u in users])} for m, vals in per_user.items()},
    )
    by = mf.by_group
    sizes = labels.value_counts()
    diff, ratio = mf.difference(), mf.ratio()
    return {
        "groups": {str(g): {"users": int(sizes[g])} | {m: float(by.loc[g, m]) for m in per_user} for g in by.index},
        "overall": {m: float(mf.overall[m]) for m in per_user},
        "gap": {
            m: {
                "difference": float(diff[m]),
                "ratio": float(ratio[m]),
                "max_group": str(by[m].idxmax()),
                "min_group": str(by[m].idxmin()),
            }
            for m in per_user
        },
    }


def per_user_metrics(
    recs: Lists, truth: Mapping[str, set[str]], popularity: Mapping[str, int], head: set[str], k: int
) -> dict[str, dict[str, float]]:
    """nDCG@k, recall@k, ARP and long-tail share of every test user (missing lists: no hits, no ARP)."""
    lists = {u: list(recs.get(u, [])) for u in truth}
    return {
        f"ndcg@{k}": {u: ndcg_at_k(lists[u], truth[u], k) for u in truth},
        f"recall@{k}": {u: recall_at_k(lists[u], truth[u], k) for u in truth},
        "arp": user_arp(lists, popularity, k),
        "long_tail_share": user_long_tail_share(lists, head, k),
    }


def fairness(
    recs: Mapping[str, Lists],
    truth: Mapping[str, set[str]],
    attrs: pd.DataFrame,
    attributes: Sequence[str],
    popularity: Mapping[str, int],
    head: set[str],
    k: int,
) -> dict[str, dict[str, dict]]:
    """{attribute: {system: group_metrics}} over the test users; users missing from the users table (or
    with an empty value) form the group "unknown"."""
    per_system = {name: per_user_metrics(r, truth, popularity, head, k) for name, r in recs.items()}
    out: dict[str, dict[str, dict]] = {}
    for a in attributes:
        col = attrs[a] if a in attrs else pd.Series(dtype=str)
        groups = {u: (str(col.get(u)) if col.get(u) not in (None, "", "nan") else UNKNOWN) for u in truth}
        out[a] = {name: group_metrics(m, groups) for name, m in per_system.items()}
    return out
