"""Popularity bias of top-k lists, each statistic set against the same statistic of the training data.

A recommender trained on skewed interactions tends to amplify the skew (Abdollahpouri et al., 2019):
it recommends popular items more than users consume them. Reading a list statistic beside the training
one shows amplification (ARP above training's) or correction, which a bare number cannot.

Popularity of an item = its distinct training users (items absent from training: 0). The short head is
the most popular items that together cover 80% of training interactions (distinct user-item pairs);
every other catalog item, including items with no training interaction, is long tail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.evaluation.beyond import catalog_coverage, exposure_gini, gini

Lists = Mapping[str, Sequence[str]]
HEAD_SHARE = 0.8


def short_head(popularity: Mapping[str, int], share: float = HEAD_SHARE) -> set[str]:
    """The fewest most-popular items whose interactions reach `share` of all (ties: item id order)."""
    ranked = sorted(((-c, i) for i, c in popularity.items() if c > 0))
    total = sum(-c for c, _ in ranked)
    head: set[str] = set()
    covered = 0
    for c, i in ranked:
        if covered >= share * total:
            break
        head.add(i)
        covered -= c
    return head


def user_arp(recs: Lists, popularity: Mapping[str, int], k: int) -> dict[str, float]:
    """Each user's mean popularity of their top-k items (NaN for an empty list)."""
    return {
        u: float(np.mean([popularity.get(i, 0) for i in items[:k]])) if len(items[:k]) else float("nan")
        for u, items in recs.items()
    }


def user_long_tail_share(recs: Lists, head: set[str], k: int) -> dict[str, float]:
    """Each user's share of top-k items outside the short head (NaN for an empty list)."""
    return {
        u: float(np.mean([i not in head for i in items[:k]])) if len(items[:k]) else float("nan")
        for u, items in recs.items()
    }


def _mean(values: Mapping[str, float]) -> float:
    v = np.array(list(values.values()), dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def average_recommended_popularity(recs: Lists, popularity: Mapping[str, int], k: int) -> float:
    """ARP: mean over users (with a non-empty list) of the mean popularity of their top-k items."""
    return _mean(user_arp(recs, popularity, k))


def long_tail_share(recs: Lists, head: set[str], k: int) -> float:
    """Mean over users of the share of their top-k items that are long tail (APLT, Abdollahpouri 2019)."""
    return _mean(user_long_tail_share(recs, head, k))


def list_stats(recs: Lists, popularity: Mapping[str, int], head: set[str], catalog: Sequence[str], k: int) -> dict:
    """ARP, long-tail share, exposure Gini over the catalog and catalog coverage of top-k lists."""
    return {
        "arp": average_recommended_popularity(recs, popularity, k),
        "long_tail_share": long_tail_share(recs, head, k),
        "exposure_gini": exposure_gini(recs, catalog, k),
        "catalog_coverage": catalog_coverage(recs, len(catalog), k),
    }


def training_stats(
    histories: Lists, popularity: Mapping[str, int], head: set[str], catalog: Sequence[str]
) -> dict[str, float]:
    """The same statistics of what users consumed in training: ARP and long-tail share of each user's
    training items (whole histories, not a top-k), the Gini of training interactions over the catalog and
    the share of catalog items with any training interaction."""
    n = max((len(h) for h in histories.values()), default=0)
    counts = np.array([popularity.get(i, 0) for i in catalog], dtype=np.float64)
    return {
        "arp": average_recommended_popularity(histories, popularity, n),
        "long_tail_share": long_tail_share(histories, head, n),
        "exposure_gini": gini(counts),
        "catalog_coverage": float((counts > 0).mean()) if len(counts) else 0.0,
    }


def popularity_bias(
    recs: Mapping[str, Lists],
    histories: Lists,
    popularity: Mapping[str, int],
    catalog: Sequence[str],
    k: int,
) -> dict[str, dict[str, float]]:
    """{"training": reference stats and the short head's size, system: stats + arp_lift (ARP / training
    ARP)} for every system."""
    head = short_head(popularity)
    ref = training_stats(histories, popularity, head, catalog) | {"short_head_items": float(len(head))}
    out: dict[str, dict[str, float]] = {"training": ref}
    for name, r in recs.items():
        s = list_stats(r, popularity, head, catalog, k)
        s["arp_lift"] = s["arp"] / ref["arp"] if ref["arp"] else float("nan")
        out[name] = s
    return out
