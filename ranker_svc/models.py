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
        model = ServingModel.load(Path(bundle))
        with self._lock:
            self._models[model.version] = model
            if not self._default:
                self._default = model.version
        MODEL_INFO.labels("ranker_svc", model.version, "loaded").set(1)
        BUNDLE_CREATED.labels("ranker_svc", model.version).set(model.created)
        for name, value in model.metrics.items():
            if name.startswith("valid_"):
                MODEL_QUALITY.labels("ranker_svc", model.version, name).set(value)
        log.info("loaded model %s from %s", model.version, bundle)
        return model

    def set_default(self, version: str) -> None:
        with self._lock:
            if version not in self._models:
                raise UnknownModelVersion(version)
            self._default = version

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
