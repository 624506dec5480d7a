"""Storage backends of feature_svc, chosen by URL so deployment config alone decides where features live."""

from __future__ import annotations

from feature_svc.storage.base import (
    ITEM_INTERACTIONS_FEATURE,
    USER_INTERACTIONS_FEATURE,
    Event,
    FeatureStorage,
    ItemRecord,
    StorageError,
    StorageUnavailable,
    UserRecord,
)
from feature_svc.storage.embedded import EmbeddedStorage

__all__ = [
    "ITEM_INTERACTIONS_FEATURE",
    "USER_INTERACTIONS_FEATURE",
    "EmbeddedStorage",
    "Event",
    "FeatureStorage",
    "ItemRecord",
    "StorageError",
    "StorageUnavailable",
    "UserRecord",
    "open_storage",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_storage(url: str) -> FeatureStorage:
    """`embedded://` or "" -> EmbeddedStorage; `redis://host:port/db` (or rediss://, unix://) -> RedisStorage.

    Redis connects lazily: an unreachable server surfaces as StorageUnavailable on first use, so the
    service can start, report NOT_SERVING and recover when Redis comes back.
    """
    url = (url or "").strip()
    if url in ("", "embedded://", "embedded:"):
        return EmbeddedStorage()
    if url.startswith(_REDIS_SCHEMES):
        from feature_svc.storage.redis_store import RedisStorage  # keeps redis-py off the embedded path

        return RedisStorage(url)
    scheme = url.split("://", 1)[0] if "://" in url else url[:20]  # not the whole URL: it may hold a password
    raise ValueError(f"unsupported feature storage URL scheme {scheme!r}: use embedded:// or redis://host:port/db")
