"""Filling a feature storage from a model bundle's feature tables (feature_svc at start, `recsys features load`)."""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.bundle import BundleMetadata, verify_bundle
from recsys.feature_tables import FeatureTables
from recsys.forget import Forgotten
from recsys.forget.tables import drop_users
from recsys.storage.base import FeatureStorage

log = logging.getLogger(__name__)


def load_bundle_features(storage: FeatureStorage, bundle: Path, forgotten: Forgotten | None = None) -> BundleMetadata:
    """Bulk-load a bundle's feature tables (the storage swaps them in atomically) and return its metadata.

    Users in `forgotten` (the registry, recsys/forget/) whose forget the bundle's training did not honour
    (`forgotten_through_ms`) are left out: an erased user never comes back with a restart or a new store.
    A shared store (Redis) already holding this bundle is left alone: reloading it would drop the
    events recorded since, and every replica start would do it again (a forget erased it there in place).
    """
    meta = verify_bundle(bundle)
    if storage.loaded_bundle() != meta.version:
        tables = FeatureTables.load(Path(bundle) / "features")
        if forgotten is not None:
            tables, n = drop_users(tables, forgotten.after(meta.forgotten_through_ms))
            if n:
                log.info("bundle %s: left out %d forgotten users' feature rows", meta.version, n)
        storage.load(tables)
        storage.mark_loaded_bundle(meta.version)
    return meta
