"""In-process feature and candidate sources: the pipeline without the network, for training and evaluation.

They wrap the very objects the services wrap (a feature storage backend, a CandidateGenerator), so an
offline run exercises the serving code path minus gRPC. Each holds one model version.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.types import CandidateList, ItemView, UnknownVersion, UserView
from recsys.retrieval.generator import CandidateGenerator
from recsys.storage.base import FeatureStorage

PREFETCH_CHUNK = 2048  # users searched per batch by prefetched() (bounds the batch's memory)


def _check(component: str, held: str, asked: str) -> None:
    if asked and held and asked != held:
        raise UnknownVersion(component, asked, [held])


class LocalFeatureSource:
    def __init__(self, storage: FeatureStorage, version: str = ""):
        self.storage = storage
        self.version = version

    async def get_user(self, user_id: str, history_limit: int, version: str = "") -> UserView:
        _check("features", self.version, version)
        names = self.storage.user_feature_names
        rec = self.storage.get_users([user_id], history_limit)[0]
        if rec is None:
            return UserView(user_id, False, names, np.full(len(names), np.nan, np.float32), [], {})
        return UserView(user_id, True, names, rec.values, list(rec.history), dict(rec.attributes))

    async def get_items(self, item_ids: list[str], version: str = "") -> tuple[list[str], list[ItemView]]:
        _check("features", self.version, version)
        names = self.storage.item_feature_names
        empty = np.full(len(names), np.nan, np.float32)
        views = [ItemView(x, False, empty, [], "") if r is None else
                 ItemView(x, True, r.values, list(r.categories), r.title)
                 for x, r in zip(item_ids, self.storage.get_items(item_ids), strict=True)]
        return names, views


class LocalCandidateSource:
    def __init__(self, generator: CandidateGenerator, version: str = ""):
        self.generator = generator
        self.version = version

    async def retrieve(self, user_id: str, history: list[str], exclude: list[str], n: int,
                       attributes: dict[str, str], include_seen: bool, version: str = "",
                       quotas: dict[str, float] | None = None) -> CandidateList:
        _check("candidates", self.version, version)
        gen = self.generator
        ids, c = gen.retrieve_ids(history, exclude, n, attributes, include_seen, quotas, user_id)
        return CandidateList(item_ids=ids, score_names=list(c.score_names), scores=c.scores, source_masks=c.sources,
                             source_vocab=list(c.source_names), model_version=self.version,
                             relative_score_names=list(gen.relative_score_names),
                             fresh_rows=np.flatnonzero(c.items >= gen.n_trained))


def prefetch_users(storage: FeatureStorage, generator: CandidateGenerator, users: list[str],
                   pipe: PipelineConfig) -> None:
    """CandidateGenerator.prefetch for these users' requests, with the histories the pipeline will send (the
    last `pipe.history_window` stored items: stages.retrieve's window)."""
    window = pipe.history_window
    generator.prefetch([list(r.history)[-window:] if r is not None else [] for r in storage.get_users(users)],
                       pipe.n_candidates)


def prefetched(storage: FeatureStorage, generator: CandidateGenerator, users: list[str],
               pipe: PipelineConfig) -> Iterator[str]:
    """`users` in order, each chunk of PREFETCH_CHUNK prefetched first (prefetch_users): iterate over it in place
    of the list, and the per-user pipeline runs that follow share one batched search per chunk."""
    for lo in range(0, len(users), PREFETCH_CHUNK):
        chunk = users[lo:lo + PREFETCH_CHUNK]
        prefetch_users(storage, generator, chunk, pipe)
        yield from chunk
