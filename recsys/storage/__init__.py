"""The online feature storage: one interface (`FeatureStorage`), backends chosen by URL scheme.

A backend registers the URL schemes it serves with `register_backend`; `open_storage(url)` picks the
factory by scheme, so deployment config alone decides where features live. The built-in backends are
`embedded://` (in-process, the default) and `redis://` / `rediss://` / `unix://` (shared by replicas).
Every backend must pass tests/storage/test_storage_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys.storage.base import (
    ITEM_INTERACTIONS_FEATURE,
    USER_INTERACTIONS_FEATURE,
    Erased,
    Event,
    FeatureStorage,
    ItemColumns,
    ItemRecord,
    ReadRaced,
    StorageError,
    StorageUnavailable,
    UserRecord,
)
from recsys.storage.embedded import EmbeddedStorage

__all__ = [
    "ITEM_INTERACTIONS_FEATURE",
    "USER_INTERACTIONS_FEATURE",
    "EmbeddedStorage",
    "Erased",
    "ItemColumns",
    "ReadRaced",
    "Event",
    "FeatureStorage",
    "ItemRecord",
    "StorageError",
    "StorageUnavailable",
    "UserRecord",
    "open_storage",
    "register_backend",
    "version_namespace",
]

# A factory gets the whole URL and a key namespace (one per model version in a shared store).
BackendFactory = Callable[[str, str], FeatureStorage]
_BACKENDS: dict[str, BackendFactory] = {}
DEFAULT_NAMESPACE = "recsys"


def register_backend(schemes: tuple[str, ...], factory: BackendFactory) -> None:
    """Serve URLs of these schemes (without "://", e.g. ("redis", "rediss")) with `factory(url, namespace)`."""
    for scheme in schemes:
        _BACKENDS[scheme.lower()] = factory


def backend_schemes() -> list[str]:
    return sorted(_BACKENDS)


def version_namespace(version: str, base: str = DEFAULT_NAMESPACE) -> str:
    """The namespace of one model version's features in a shared store (each live version has its own)."""
    return f"{base}:{version}" if version else base


def open_storage(url: str, namespace: str = DEFAULT_NAMESPACE) -> FeatureStorage:
    """The storage behind `url` ("" means `embedded://`); `namespace` separates data sets in a shared store.

    Network backends connect lazily: an unreachable server surfaces as StorageUnavailable on first use,
    so the service can start, report NOT_SERVING and recover when the server comes back.
    """
    url = (url or "").strip() or "embedded://"
    scheme = url.split(":", 1)[0].lower() if ":" in url else url[:20]  # never the whole URL: it may hold a password
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"unsupported feature storage URL scheme {scheme!r}: use one of "
                         f"{', '.join(s + '://' for s in backend_schemes())}")
    return factory(url, namespace)


def _redis(url: str, namespace: str) -> FeatureStorage:
    from recsys.storage.redis_store import RedisStorage  # keeps redis-py off the embedded path

    return RedisStorage(url, namespace=namespace)


register_backend(("embedded",), lambda url, namespace: EmbeddedStorage())
register_backend(("redis", "rediss", "unix"), _redis)
