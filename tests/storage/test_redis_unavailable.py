"""An unreachable Redis must fail fast with StorageUnavailable, so the server can answer UNAVAILABLE."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from recsys.feature_tables import FeatureTables
from recsys.storage import Event, FeatureStorage, StorageUnavailable
from recsys.storage.redis_store import RedisStorage

CALLS: dict[str, Callable[[FeatureStorage], object]] = {
    "get_items": lambda s: s.get_items(["i1"]),
    "get_users": lambda s: s.get_users(["u1"], history_limit=5),
    "record_events": lambda s: s.record_events([Event("u1", "i1")]),
    "last_update": lambda s: s.last_update(),
    "item_feature_names": lambda s: s.item_feature_names,
    "load": lambda s: s.load(FeatureTables([], [], [], [], [], [], [], [], [], [])),
}


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers: a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.parametrize("call", CALLS.keys())
def test_closed_port_raises_storage_unavailable_quickly(call: str) -> None:
    port = _closed_port()
    store = RedisStorage(f"redis://127.0.0.1:{port}/0")  # lazy: constructing never blocks
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{port}"):
        CALLS[call](store)
    assert time.monotonic() - start < 3.0
    store.close()


def test_ping_reports_false_instead_of_raising() -> None:
    store = RedisStorage(f"redis://127.0.0.1:{_closed_port()}/0")
    start = time.monotonic()
    assert store.ping() is False
    assert time.monotonic() - start < 3.0


def test_hung_server_times_out_with_default_timeouts(silent_port: int) -> None:
    store = RedisStorage(f"redis://127.0.0.1:{silent_port}/0")
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{silent_port}"):
        store.get_items(["i1"])
    assert time.monotonic() - start < 3.0  # 1 s read timeout, and timeouts are not retried


def test_error_message_does_not_leak_the_password() -> None:
    port = _closed_port()
    store = RedisStorage(f"redis://default:s3cret@127.0.0.1:{port}/0")
    with pytest.raises(StorageUnavailable) as info:
        store.get_items(["i1"])
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(store)
    assert f"127.0.0.1:{port}" in str(info.value)
