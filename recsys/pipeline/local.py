"""In-process feature and candidate sources: the pipeline without the network, for training and evaluation.

They wrap the very objects the services wrap (a feature storage backend, a CandidateGenerator), so an
offline run exercises the serving code path minus gRPC.
"""

from __future__ import annotations

import numpy as np

from feature_svc.storage.base import FeatureStorage
from recsys.pipeline.types import CandidateList, ItemView, UserView
from recsys.retrieval.generator import SCORE_NAMES, SOURCES, CandidateGenerator


def retrieve_list(gen: CandidateGenerator, version: str, history: list[str], exclude: list[str], n: int,
                  attributes: dict[str, str], include_seen: bool) -> CandidateList:
    """Run the generator on item ids and return ids, scores and source names."""
    c = gen.retrieve(gen.indices(history), attributes, n or None, gen.indices(exclude), include_seen)
    ids = gen.art.item_ids[c.items].tolist() if len(c.items) else []
    return CandidateList(item_ids=ids, score_names=list(SCORE_NAMES), scores=c.scores, source_masks=c.sources,
                         source_vocab=list(SOURCES), model_version=version)


class LocalFeatureSource:
    def __init__(self, storage: FeatureStorage):
        self.storage = storage

    async def get_user(self, user_id: str, max_history: int) -> UserView:
        names = self.storage.user_feature_names
        rec = self.storage.get_users([user_id], max_history)[0]
        if rec is None:
            return UserView(user_id, False, names, np.full(len(names), np.nan, np.float32), [], {})
        return UserView(user_id, True, names, rec.values, list(rec.history), dict(rec.attributes))

    async def get_items(self, item_ids: list[str]) -> tuple[list[str], list[ItemView]]:
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
                       attributes: dict[str, str], include_seen: bool) -> CandidateList:
        return retrieve_list(self.generator, self.version, history, exclude, n, attributes, include_seen)
