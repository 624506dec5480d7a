"""AUC per user: how often a held-out test item outranks a sampled unseen item.

Top-k metrics only see the first k slots; AUC looks at the whole ranking, so it tells a model that
orders the catalog well from one that only gets its head right. It is computed over scores each system
gives *beyond* its top-k (an AUC over a 10-item list would sit near 0.5 for everyone):

- the baselines (EASE, ALS, popularity) score every catalog item (`baselines.score_items`);
- the pipeline ranks its retrieved candidates: its served list first (display order), then the rest of
  the candidates by ranker score; `retrieval` ranks its candidates by reciprocal-rank fusion.

Items a system never scored (not retrieved, unknown user, item outside the catalog) are ranked below
every scored item and tie with each other. Ties count one half (the Mann-Whitney convention), so a
system that scores nothing gets exactly 0.5.

Negatives: for each user, `n` items drawn uniformly without replacement from the catalog minus the
user's training and test items, from a generator seeded by (seed, user id): the same sample for every
system and independent of which other users are evaluated.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.pipeline.offline import OfflineStack
from recsys.pipeline.recommend import prepare

N_NEGATIVES = 100  # per user; the standard sampled-metric size (He et al., 2017, used 100 too)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative) + ½ P(they tie); NaN without a positive or a negative.

    −inf marks an unscored item: below every score, tied with other unscored items.
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


def sample_negatives(
    catalog: Sequence[str], excluded: Mapping[str, set[str]], users: Sequence[str], n: int, seed: int
) -> dict[str, list[str]]:
    """Up to n catalog items per user, none of them in excluded[user], seeded by (seed, crc32(user))."""
    items = np.asarray(catalog, dtype=object)
    out = {}
    for u in users:
        ex = excluded.get(u, set())
        rng = np.random.default_rng([seed, zlib.crc32(u.encode())])
        # n + |ex| distinct draws always hold n allowed items when the catalog has them
        idx = rng.choice(len(items), size=min(len(items), n + len(ex)), replace=False)
        out[u] = [x for x in items[idx].tolist() if x not in ex][:n]
    return out


@dataclass
class AucSample:
    """Each user's positives (test items not in training) followed by sampled negatives."""

    items: dict[str, list[str]]
    n_pos: dict[str, int]

    @classmethod
    def build(
        cls,
        catalog: Sequence[str],
        train: Mapping[str, set[str]],
        test: Mapping[str, set[str]],
        n: int = N_NEGATIVES,
        seed: int = 42,
    ) -> AucSample:
        users = sorted(test)
        pos = {u: sorted(test[u] - train.get(u, set())) for u in users}
        neg = sample_negatives(catalog, {u: train.get(u, set()) | test[u] for u in users}, users, n, seed)
        return cls({u: pos[u] + neg[u] for u in users}, {u: len(pos[u]) for u in users})

    def mean_auc(self, scores: Mapping[str, np.ndarray]) -> float:
        """Mean per-user AUC given each user's scores of `items[user]` (missing users: all unscored)."""
        vals = []
        for u, its in self.items.items():
            s = np.asarray(scores.get(u, np.full(len(its), -np.inf)), dtype=np.float64)
            a = auc(s[: self.n_pos[u]], s[self.n_pos[u] :])
            if not np.isnan(a):
                vals.append(a)
        return float(np.mean(vals)) if vals else float("nan")


def ranking_scores(ranking: Sequence[str], items: Sequence[str]) -> np.ndarray:
    """Scores that reproduce a ranking: higher for earlier positions, −inf for items not in it."""
    pos = {x: r for r, x in enumerate(ranking)}
    return np.array([-float(pos[i]) if i in pos else -np.inf for i in items])


def scores_from_rankings(rankings: Mapping[str, Sequence[str]], sample: AucSample) -> dict[str, np.ndarray]:
    return {u: ranking_scores(rankings.get(u, []), its) for u, its in sample.items.items()}


def served_then_scored(served: Sequence[str], cand_ids: Sequence[str], scores: np.ndarray) -> list[str]:
    """The pipeline's full ranking: the served list as displayed, then the other candidates by ranker score
    (ties in candidate order). MMR and fresh-item reservation change only the head."""
    shown = set(served)
    order = np.argsort(-np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf), kind="stable")
    return list(served) + [cand_ids[i] for i in order.tolist() if cand_ids[i] not in shown]


def pipeline_rankings(
    stack: OfflineStack,
    users: Sequence[str],
    served: Mapping[str, Mapping[str, Sequence[str]]],
    on_user: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, list[str]]]:
    """For each served system (name → {user: list}), each user's full candidate ranking. One `prepare()`
    per user (the serving code's fetch → retrieve → featurize → score) serves every system."""

    async def run() -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {name: {} for name in served}
        for u in users:
            prep = await prepare(u, stack.model, stack.features, stack.candidates, stack.pipeline)
            for name, lists in served.items():
                out[name][u] = served_then_scored(lists.get(u, []), prep.cands.item_ids, prep.scores)
            on_user()
        return out

    return asyncio.run(run())
