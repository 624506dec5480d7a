"""Degraded, not down: with feature_svc killed or candidate_svc frozen, Recommend still answers within
the caller's deadline from what the ranker holds (the user's last good list, else the bundle's popular
items), marked and counted; once the dependency is back (restarted by the cluster's supervisor, or
thawed), normal answers resume within 5 s."""

from __future__ import annotations

import os
import signal
import time

import pytest

from recsys.client import RecommenderClient
from recsys.cluster import start_cluster, wait_healthy
from recsys.scrape import scrape

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chaos(small_bundle, tmp_path_factory):
    with start_cluster(small_bundle, port=0, log_dir=tmp_path_factory.mktemp("degraded-logs")) as c:
        yield c


def _users(small_dataset, n: int) -> list[str]:
    return [str(u) for u in small_dataset.interactions["user_id"].unique()[:n]]


def _until_normal(client: RecommenderClient, user: str, timeout_s: float = 10.0) -> float:
    """Seconds until a normal (not degraded) answer comes back."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not client.recommend(user, 5, diversity_lambda=0.55, timeout=1.0).degraded:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"still degraded after {timeout_s} s")


def _degraded_count(cluster, dependency: str) -> float:
    return sum(v for (name, labels), v in scrape(cluster.services["ranker_svc"].metrics_port).items()
               if name == "recsys_recommend_degraded_total" and dict(labels)["dependency"] == dependency)


def test_a_dead_feature_store_gives_degraded_answers_until_it_is_restarted(chaos, small_dataset) -> None:
    users = _users(small_dataset, 40)
    feature_svc = chaos.services["feature_svc"]
    with RecommenderClient(chaos.target) as client:
        normal = {u: client.recommend(u, 5) for u in users[:10]}
        assert not any(r.degraded for r in normal.values())
        feature_svc.proc.kill()
        feature_svc.proc.wait(10)
        cached = client.recommend(users[0], 5, timeout=1.0)
        assert cached.cached and not cached.degraded  # the per-user cache answers through the outage
        t0 = time.monotonic()
        got = client.recommend(users[0], 5, diversity_lambda=0.5, timeout=1.0)  # not in the cache
        assert time.monotonic() - t0 < 1.0
        assert got.degraded == "feature_svc unavailable: last good list"
        assert [it.item_id for it in got.items] == [it.item_id for it in normal[users[0]].items]
        stranger = client.recommend(users[30], 5, exclude_item_ids=[got.items[0].item_id], timeout=1.0)
        assert stranger.degraded == "feature_svc unavailable: popular items" and len(stranger.items) == 5
        assert got.items[0].item_id not in {it.item_id for it in stranger.items}
        assert _degraded_count(chaos, "feature_svc") >= 2
        deadline = time.monotonic() + 10
        while feature_svc.proc.poll() is not None:  # the supervisor `recsys up` runs
            chaos.supervise()
            assert time.monotonic() < deadline, "feature_svc was not restarted"
            time.sleep(0.05)
        wait_healthy(feature_svc.address, 60, feature_svc.proc, "feature_svc")
        assert _until_normal(client, users[0]) < 5.0


def test_a_frozen_candidate_service_costs_no_more_than_the_callers_deadline(chaos, small_dataset) -> None:
    users = _users(small_dataset, 5)
    candidate_svc = chaos.services["candidate_svc"]
    with RecommenderClient(chaos.target) as client:
        client.recommend(users[1], 5)
        os.kill(candidate_svc.proc.pid, signal.SIGSTOP)  # alive but answering nothing: a hung dependency
        try:
            t0 = time.monotonic()
            got = client.recommend(users[1], 5, diversity_lambda=0.45, timeout=0.3)
            elapsed = time.monotonic() - t0
            # answered, not DEADLINE_EXCEEDED: the ranker kept part of the deadline for the fallback
            assert got.degraded == "candidate_svc unavailable: last good list" and elapsed < 0.35, elapsed
        finally:
            os.kill(candidate_svc.proc.pid, signal.SIGCONT)
        assert _until_normal(client, users[1]) < 5.0


def test_sigterm_drains_the_calls_in_flight_before_the_ranker_exits(chaos, small_dataset) -> None:
    """SIGTERM: NOT_SERVING, no new calls, the ones in flight finish (here one held up by a frozen
    dependency, answered degraded), then exit."""
    import concurrent.futures

    users = _users(small_dataset, 3)
    ranker, candidate_svc = chaos.services["ranker_svc"], chaos.services["candidate_svc"]
    with RecommenderClient(chaos.target) as client:
        client.recommend(users[2], 5)
        os.kill(candidate_svc.proc.pid, signal.SIGSTOP)
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(client.recommend, users[2], 5, diversity_lambda=0.35, timeout=3.0)
                time.sleep(0.5)  # the call is in flight, waiting on candidate_svc
                ranker.proc.send_signal(signal.SIGTERM)
                got = slow.result(timeout=10)
        finally:
            os.kill(candidate_svc.proc.pid, signal.SIGCONT)
        assert got.degraded.startswith("candidate_svc unavailable")
        assert ranker.proc.wait(15) == 0
    deadline = time.monotonic() + 30
    while ranker.proc.poll() is not None:  # leave the module's cluster whole
        chaos.supervise()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_healthy(ranker.address, 60, ranker.proc, "ranker_svc")
