"""The per-user recommendation-list cache of ranker_svc: one interface (`ListCache`), backends by URL.

`open_cache(url)` picks the backend by scheme, so deployment config alone decides where lists live:
`memory://?max_entries=100000` (in-process LRU, per replica), `redis://host:port/db?prefix=recsys:cache`
(shared by replicas; also `rediss://`, `unix://`), and `none` or "" for no cache. `SingleFlight`
makes concurrent misses for the same key compute once. Every backend must pass
tests/cache/test_cache_contract.py; docs/cache.md describes keys, invalidation and generations.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from recsys.cache.base import (
    DEFAULT_MAX_NEW,
    DEFAULT_TTL_S,
    CachedList,
    CacheHit,
    CacheUnavailable,
    ListCache,
    MissReason,
    fingerprint,
)
from recsys.cache.memory import MemoryListCache
from recsys.cache.singleflight import SingleFlight

__all__ = [
    "DEFAULT_MAX_NEW",
    "DEFAULT_TTL_S",
    "CacheHit",
    "CacheUnavailable",
    "CachedList",
    "ListCache",
    "MemoryListCache",
    "MissReason",
    "SingleFlight",
    "cache_schemes",
    "fingerprint",
    "open_cache",
    "register_cache_backend",
]

# A factory gets the whole URL, the TTL in seconds and max_new.
CacheFactory = Callable[[str, float, int], ListCache]
_BACKENDS: dict[str, CacheFactory] = {}
_OFF = ("", "none", "off")


def register_cache_backend(schemes: tuple[str, ...], factory: CacheFactory) -> None:
    """Serve URLs of these schemes (without "://") with `factory(url, ttl_s, max_new)`."""
    for scheme in schemes:
        _BACKENDS[scheme.lower()] = factory


def cache_schemes() -> list[str]:
    return sorted(_BACKENDS)


def open_cache(url: str | None, ttl_s: float = DEFAULT_TTL_S, max_new: int = DEFAULT_MAX_NEW) -> ListCache | None:
    """The cache behind `url`, or None when caching is off ("", "none" or "off").

    Network backends connect lazily: an unreachable server surfaces as CacheUnavailable on first use.
    """
    url = (url or "").strip()
    if url.lower() in _OFF:
        return None
    scheme = url.split(":", 1)[0].lower() if ":" in url else url[:20]  # never the whole URL: it may hold a password
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"unsupported cache URL scheme {scheme!r}: use one of "
                         f"{', '.join(s + '://' for s in cache_schemes())} or 'none'")
    return factory(url, ttl_s, max_new)


def _memory(url: str, ttl_s: float, max_new: int) -> ListCache:
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(params) - {"max_entries", "max_users", "max_events_per_user"})
    if unknown:
        raise ValueError(f"unknown memory cache URL parameter(s): {', '.join(unknown)}")
    try:
        sizes = {k: int(v) for k, v in params.items()}
    except ValueError:
        raise ValueError(f"memory cache URL parameters must be integers: {params}") from None
    return MemoryListCache(ttl_s, max_new, **sizes)


def _redis(url: str, ttl_s: float, max_new: int) -> ListCache:
    from recsys.cache.redis_cache import RedisListCache  # keeps redis-py off the embedded path

    return RedisListCache(url, ttl_s, max_new)


register_cache_backend(("memory",), _memory)
register_cache_backend(("redis", "rediss", "unix"), _redis)
