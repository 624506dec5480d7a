"""What every Redis backend (feature storage, event stream, list cache) does the same way: a client with
short timeouts that retries only connection errors, a ping that never raises, a close that drops the
pool, errors turned into the backend's own, and URLs made safe for messages and logs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect(url: str, connect_timeout: float, read_timeout: float, retries: int = 1) -> redis.Redis:
    """A lazily connecting client. Only connection errors are retried, once, without backoff (a pooled
    connection may be stale after a Redis restart); timeouts are not: the command may already have run."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=connect_timeout, socket_timeout=read_timeout,
        retry=Retry(NoBackoff(), retries, supported_errors=(redis.exceptions.ConnectionError,)),
        health_check_interval=30)


# The server unreachable, too slow, or a read-only replica after a failover: worth retrying later.
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)


@contextmanager
def translated(url: str, what: str, unavailable: type[Exception], failed: type[Exception]) -> Iterator[None]:
    """Redis errors inside the block as the backend's own: TRANSIENT ones as `unavailable`, any other as
    `failed`; `url` (already redacted) and `what` name the server and the operation."""
    try:
        yield
    except TRANSIENT as e:
        raise unavailable(f"Redis at {url} unavailable during {what}: {e}") from e
    except redis.exceptions.RedisError as e:
        raise failed(f"Redis at {url} failed during {what}: {e}") from e


def ping(client: redis.Redis) -> bool:
    """Whether the server answers now; never raises (for health checks)."""
    try:
        return bool(client.ping())
    except Exception:
        return False


def close(client: redis.Redis) -> None:
    client.close()
    client.connection_pool.disconnect()


def redact(url: str, keep_query: bool = True) -> str:
    """The URL without its password (and, unless `keep_query`, its parameters), safe for messages."""
    try:
        parts = urlsplit(url)
        if not keep_query:
            parts = parts._replace(query="")
        if parts.password is not None:
            host = parts.hostname or ""
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}"
                                   + (f":{parts.port}" if parts.port else ""))
        return urlunsplit(parts)
    except ValueError:
        return "<unparseable url>"
