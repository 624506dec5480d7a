"""The model versions a ranker holds at once (for A/B experiments and pinned debugging requests)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from recsys.metrics import BUNDLE_CREATED, MODEL_INFO, MODEL_QUALITY
from recsys.pipeline.model import ServingModel

log = logging.getLogger("ranker_svc")


class UnknownModelVersion(KeyError):
    pass


class ModelSet:
    """Loaded ServingModels by version, and which one serves by default. Swaps are atomic: a request
    takes a reference to a model once and keeps using it even if the default changes meanwhile."""

    def __init__(self) -> None:
        self._models: dict[str, ServingModel] = {}
        self._default = ""
        self._lock = threading.Lock()

    def load(self, bundle: Path) -> ServingModel:
        return self.add(ServingModel.load(Path(bundle)))

    def add(self, model: ServingModel) -> ServingModel:
        with self._lock:
            models = dict(self._models)
            models[model.version] = model
            self._models = models  # copy-on-write: readers never see a dict being changed
            if not self._default:
                self._default = model.version
        self._export()
        log.info("loaded model %s", model.version)
        return model

    def set_default(self, version: str) -> None:
        with self._lock:
            if version not in self._models:
                raise UnknownModelVersion(version)
            self._default = version
        self._export()

    def retain(self, keep: set[str]) -> None:
        """Unload every version not in `keep` (the default always stays)."""
        with self._lock:
            self._models = {v: m for v, m in self._models.items() if v in keep or v == self._default}
        self._export()

    def _export(self) -> None:
        MODEL_INFO.clear()
        MODEL_QUALITY.clear()
        BUNDLE_CREATED.clear()
        for v, m in self._models.items():
            MODEL_INFO.labels("ranker_svc", v, "default" if v == self._default else "loaded").set(1)
            BUNDLE_CREATED.labels("ranker_svc", v).set(m.created)
            for name, value in m.metrics.items():
                if name.startswith("valid_"):
                    MODEL_QUALITY.labels("ranker_svc", v, name).set(value)

    @property
    def default_version(self) -> str:
        return self._default

    def versions(self) -> list[str]:
        return list(self._models)

    def get(self, version: str = "") -> ServingModel:
        models = self._models
        key = version or self._default
        if key not in models:
            raise UnknownModelVersion(key)
        return models[key]
