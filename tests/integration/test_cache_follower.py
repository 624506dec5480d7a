"""The ranker's cache follower: interactions another replica accepted reach this replica's in-process
cache through the stream, read by a child process that is restarted when it dies."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from recsys.client import RecommenderClient, interaction
from recsys.events.codec import encode_event, now_ms
from recsys.scrape import scrape
from recsys.stream import open_stream

from .feedback_helpers import wait_for

pytestmark = pytest.mark.integration


def _follower_pids(ranker_pid: int) -> list[int]:
    """The ranker's children running ranker_svc.stream_follower."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == ranker_pid and b"ranker_svc.stream_follower" in cmdline:
            pids.append(int(entry.name))
    return pids


def _click_from_another_replica(cluster, user: str, item: str) -> None:
    stream = open_stream(f"file://{cluster.log_dir / 'events'}")
    try:
        ev = interaction(user, item, "click", event_id=f"elsewhere-{uuid.uuid4().hex}")
        assert stream.append([(ev.event_id, encode_event(ev, now_ms(), producer="another-replica"))]) == [True]
    finally:
        stream.close()


def _served(client: RecommenderClient, user: str) -> tuple[bool, set[str]]:
    resp = client.recommend(user, 10)
    return resp.cached, {it.item_id for it in resp.items}


def test_a_click_accepted_by_another_replica_filters_this_replicas_cached_list(cluster, small_dataset):
    user = str(small_dataset.interactions["user_id"].value_counts().index[7])
    with RecommenderClient(cluster.target) as client:
        client.recommend(user, 10)
        cached, items = _served(client, user)
        assert cached
        clicked = sorted(items)[0]
        _click_from_another_replica(cluster, user, clicked)
        wait_for(lambda: clicked not in _served(client, user)[1], 5, "the other replica's click reaching the cache")

    def applied_by_the_follower() -> float:  # the child's counters reach the ranker's metrics
        metrics = scrape(cluster.services["ranker_svc"].metrics_port)
        return sum(v for (name, labels), v in metrics.items()
                   if name == "recsys_stream_consumer_applied_total" and dict(labels)["group"].startswith("cache@"))

    wait_for(lambda: applied_by_the_follower() >= 1, 5, "the follower's metrics in the ranker")


def test_a_killed_follower_is_restarted_and_catches_up(cluster, small_dataset):
    ranker_pid = cluster.services["ranker_svc"].proc.pid
    wait_for(lambda: len(_follower_pids(ranker_pid)) == 1, 10, "the follower running")
    (old,) = _follower_pids(ranker_pid)
    os.kill(old, signal.SIGKILL)
    user = str(small_dataset.interactions["user_id"].value_counts().index[8])
    with RecommenderClient(cluster.target) as client:
        client.recommend(user, 10)
        cached, items = _served(client, user)
        assert cached
        clicked = sorted(items)[0]
        _click_from_another_replica(cluster, user, clicked)  # appended while no follower may be running
        wait_for(lambda: [p for p in _follower_pids(ranker_pid) if p != old], 15, "a new follower")
        wait_for(lambda: clicked not in _served(client, user)[1], 10, "the click reaching the cache after the restart")
    time.sleep(0.1)
