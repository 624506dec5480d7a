"""The event stream: one interface (`EventStream`), backends chosen by URL scheme, one consumer loop.

A backend registers the URL schemes it serves with `register_stream_backend`; `open_stream(url)` picks the
factory by scheme, so deployment config alone decides where events live. The built-in backends are
`file://` (an embedded durable log on local disk, the default: no server needed) and `redis://` /
`rediss://` / `unix://` (Redis Streams, for consumers on several machines). Every backend must pass
tests/stream/test_stream_contract.py. See docs/event-stream.md.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys.stream.base import (
    DEFAULT_DEDUP_TTL_S,
    DeadLetter,
    Entry,
    EventStream,
    GroupNotFound,
    Redaction,
    StreamError,
    StreamUnavailable,
)
from recsys.stream.consumer import ConsumerLoop
from recsys.stream.disk_log import DiskLogStream, open_disk_log

__all__ = [
    "DEFAULT_DEDUP_TTL_S",
    "DEFAULT_STREAM_URL",
    "topic_url",
    "ConsumerLoop",
    "DeadLetter",
    "DiskLogStream",
    "Entry",
    "EventStream",
    "GroupNotFound",
    "Redaction",
    "StreamError",
    "StreamUnavailable",
    "open_stream",
    "register_stream_backend",
    "stream_schemes",
]

StreamFactory = Callable[[str], EventStream]
_BACKENDS: dict[str, StreamFactory] = {}
DEFAULT_STREAM_URL = "file://var/events"


def register_stream_backend(schemes: tuple[str, ...], factory: StreamFactory) -> None:
    """Serve URLs of these schemes (without "://", e.g. ("redis", "rediss")) with `factory(url)`."""
    for scheme in schemes:
        _BACKENDS[scheme.lower()] = factory


def stream_schemes() -> list[str]:
    return sorted(_BACKENDS)


def open_stream(url: str) -> EventStream:
    """The stream behind `url` ("" means DEFAULT_STREAM_URL, a log under ./var/events).

    The disk log creates its directory now (StreamUnavailable if it cannot); Redis connects lazily, so
    a producer can start while Redis is down and its appends fail with StreamUnavailable until it is back.
    """
    url = (url or "").strip() or DEFAULT_STREAM_URL
    scheme = url.split(":", 1)[0].lower() if ":" in url else url[:20]  # never the whole URL: it may hold a password
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"unsupported event stream URL scheme {scheme!r}: use one of "
                         f"{', '.join(s + '://' for s in stream_schemes())}")
    return factory(url)


def topic_url(url: str, topic: str) -> str:
    """The URL of a sibling stream on the same backend: a subdirectory of a disk log, `<key>:<topic>` in
    Redis. Exposures live on their own topic, so the consumers of user events never read them (at one
    exposure per Recommend they would outnumber the events many times over)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    url = (url or "").strip() or DEFAULT_STREAM_URL
    parts = urlsplit(url)
    if parts.scheme == "file":
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + topic)) if parts.path else \
            urlunsplit(parts._replace(netloc=parts.netloc.rstrip("/") + "/" + topic))
    query = dict(parse_qsl(parts.query))
    query["key"] = f"{query.get('key', 'recsys:events')}:{topic}"
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redis(url: str) -> EventStream:
    from recsys.stream.redis_stream import RedisStream  # keeps redis-py off the embedded path

    return RedisStream(url)


register_stream_backend(("file",), open_disk_log)
register_stream_backend(("redis", "rediss", "unix"), _redis)
