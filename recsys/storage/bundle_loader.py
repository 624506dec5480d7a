"""Filling a feature storage from a model bundle's feature tables (feature_svc at start, `recsys features load`)."""

from __future__ import annotations

from pathlib import Path

from recsys.bundle import BundleMetadata, verify_bundle
from recsys.feature_tables import FeatureTables
from recsys.storage.base import FeatureStorage


def load_bundle_features(storage: FeatureStorage, bundle: Path) -> BundleMetadata:
    """Bulk-load a bundle's feature tables (the storage swaps them in atomically) and return its metadata.

    A shared store (Redis) already holding this bundle is left alone: reloading it would drop the
    events recorded since, and every replica start would do it again.
    """
    meta = verify_bundle(bundle)
    if storage.loaded_bundle() != meta.version:
        storage.load(FeatureTables.load(Path(bundle) / "features"))
        storage.mark_loaded_bundle(meta.version)
    return meta
