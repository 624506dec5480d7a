"""The model versions a service holds at once: the champion (its default) plus every other live version.

Each service keeps one `LiveVersions` of what it loads from a bundle (the ranker a ServingModel,
candidate_svc a CandidateGenerator, feature_svc a feature storage), so a request pinned to a version is
answered by that version in every service, or refused with FAILED_PRECONDITION naming it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from recsys.metrics import BUNDLE_CREATED, MODEL_INFO
from recsys.pipeline.types import UnknownVersion

__all__ = ["LiveVersions", "UnknownVersion"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class LiveVersions(Generic[T]):
    """Loaded objects by version and which one serves by default. Swaps are atomic: a request takes a
    reference once and keeps using it even if the default changes meanwhile (copy-on-write dict)."""

    def __init__(self, component: str, on_change: Callable[[LiveVersions[T]], None] | None = None,
                 on_retire: Callable[[T], None] | None = None):
        self.component = component
        self._items: dict[str, T] = {}
        self._created: dict[str, float] = {}
        self._default = ""
        self._lock = threading.Lock()
        self._on_change = on_change
        self._on_retire = on_retire

    def add(self, version: str, obj: T, created: float = 0.0) -> T:
        """Hold `obj` as `version` (the first version added becomes the default)."""
        with self._lock:
            items = dict(self._items)
            old = items.get(version)
            items[version] = obj
            self._items = items
            self._created[version] = created
            if not self._default:
                self._default = version
        if old is not None and old is not obj and self._on_retire:
            self._on_retire(old)
        self._export()
        log.info("%s: holding model %s", self.component, version)
        return obj

    def set_default(self, version: str) -> None:
        with self._lock:
            if version not in self._items:
                raise UnknownVersion(self.component, version, list(self._items))
            self._default = version
        self._export()

    def retain(self, keep: set[str]) -> None:
        """Drop every version not in `keep` (the default always stays)."""
        with self._lock:
            dropped = [v for v in self._items if v not in keep and v != self._default]
            retired = [self._items[v] for v in dropped]
            self._items = {v: m for v, m in self._items.items() if v not in dropped}
            for v in dropped:
                self._created.pop(v, None)
        for obj in retired:
            log.info("%s: retired a model version", self.component)
            if self._on_retire:
                self._on_retire(obj)
        if dropped:
            self._export()

    def _export(self) -> None:
        items, default = self._items, self._default
        for v in list(self._created):
            if v not in items:
                self._created.pop(v, None)
        with self._lock:
            # Only this component's series: the other components of an in-process host keep theirs.
            for labels in [s for s in _series(MODEL_INFO) if s[0] == self.component]:
                MODEL_INFO.remove(*labels)
            for labels in [s for s in _series(BUNDLE_CREATED) if s[0] == self.component]:
                BUNDLE_CREATED.remove(*labels)
            for v in items:
                MODEL_INFO.labels(self.component, v, "default" if v == default else "live").set(1)
                BUNDLE_CREATED.labels(self.component, v).set(self._created.get(v, 0.0))
        if self._on_change:
            self._on_change(self)

    @property
    def default_version(self) -> str:
        return self._default

    def versions(self) -> list[str]:
        return list(self._items)

    def __contains__(self, version: str) -> bool:
        return version in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, version: str = "") -> tuple[str, T]:
        """(version, object) for `version`, or for the default when it is ""."""
        items = self._items
        key = version or self._default
        obj = items.get(key)
        if obj is None:
            raise UnknownVersion(self.component, key, list(items))
        return key, obj


def _series(metric) -> list[tuple[str, ...]]:
    """The label values of every child of a labelled metric."""
    return list(metric._metrics)  # prometheus_client keeps children by their label tuple
