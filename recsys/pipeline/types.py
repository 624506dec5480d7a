"""Plain data passed between pipeline stages, independent of gRPC."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, overload

import numpy as np


class UnknownVersion(LookupError):
    """A request named a version this service does not hold."""

    def __init__(self, component: str, version: str, held: list[str]):
        self.version = version
        self.held = held
        super().__init__(f"{component}: model_version {version!r} is not live here "
                         f"(live: {', '.join(held) or 'none'})")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class UserView:
    user_id: str
    found: bool
    feature_names: list[str]
    values: np.ndarray
    history: list[str]                 # oldest first
    attributes: dict[str, str]


@dataclass
class ItemView:
    item_id: str
    found: bool
    values: np.ndarray
    categories: list[str]
    title: str


class ItemBatch(Sequence[ItemView]):
    """Item views held as columns (what feature_svc answers with): featurize reads the value matrix and the
    category lists at once, and an ItemView is built only for the items a later stage looks at."""

    def __init__(self, item_ids: list[str], found: np.ndarray, values: np.ndarray, categories: list[list[str]],
                 titles: list[str]):
        n = len(item_ids)
        if not (len(found) == len(values) == len(categories) == len(titles) == n):
            raise ValueError(f"item columns of unequal lengths: {n} ids, {len(found)} found, {len(values)} values, "
                             f"{len(categories)} categories, {len(titles)} titles")
        self.item_ids = item_ids
        self.found = found                # bool [n]
        self.values = values              # float32 [n, F]
        self.categories = categories
        self.titles = titles

    def __len__(self) -> int:
        return len(self.item_ids)

    @overload
    def __getitem__(self, i: int) -> ItemView: ...

    @overload
    def __getitem__(self, i: slice) -> ItemBatch: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ItemBatch(self.item_ids[i], self.found[i], self.values[i], self.categories[i], self.titles[i])
        return ItemView(self.item_ids[i], bool(self.found[i]), self.values[i], self.categories[i], self.titles[i])


def categories_of(items: Sequence[ItemView], rows: np.ndarray) -> list[list[str]]:
    """The category lists of the given rows; read from an ItemBatch's column, without a view per item."""
    if isinstance(items, ItemBatch):
        cats = items.categories
        return [cats[i] for i in rows.tolist()]
    return [items[i].categories for i in rows.tolist()]


@dataclass
class CandidateList:
    item_ids: list[str]
    score_names: list[str]
    scores: np.ndarray                 # float32 [n, len(score_names)]
    source_masks: np.ndarray           # uint64 [n]: bit i set = source_vocab[i] proposed the item
    source_vocab: list[str]
    model_version: str = ""
    relative_score_names: list[str] = field(default_factory=list)  # see RetrieveResponse
    fresh_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # added at run time

    def sources_at(self, rows: Iterable[int]) -> list[list[str]]:
        """Source names of the given candidates only: a list shows k of hundreds."""
        names: dict[int, list[str]] = {}
        out = []
        masks = self.source_masks
        for i in rows:
            m = int(masks[i])
            if m not in names:
                names[m] = [s for b, s in enumerate(self.source_vocab) if m >> b & 1]
            out.append(names[m])
        return out


@dataclass
class RecommendParams:
    user_id: str
    k: int
    diversity_lambda: float | None = None
    exclude: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    include_seen: bool = False
    explain: bool = False
    model_version: str = ""


@dataclass
class RankedItem:
    item_id: str
    score: float
    sources: list[str]
    title: str = ""
    categories: list[str] = field(default_factory=list)
    contributions: list[tuple[str, float, float]] = field(default_factory=list)  # feature, value, contrib


@dataclass
class Recommendation:
    items: list[RankedItem]
    model_version: str
    cold_start: bool
    fallback: bool
    diversity_lambda: float
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


class FeatureSource(Protocol):
    """Where the pipeline reads features: feature_svc over gRPC, or a storage backend in-process.
    `version` names the bundle to answer from ("" = the default)."""

    async def get_user(self, user_id: str, history_limit: int, version: str = "") -> UserView: ...

    async def get_items(self, item_ids: list[str], version: str = "") -> tuple[list[str], list[ItemView]]: ...


class CandidateSource(Protocol):
    """Where the pipeline gets candidates: candidate_svc over gRPC, or a generator in-process."""

    async def retrieve(self, user_id: str, history: list[str], exclude: list[str], n: int,
                       attributes: dict[str, str], include_seen: bool, version: str = "",
                       quotas: dict[str, float] | None = None) -> CandidateList: ...
