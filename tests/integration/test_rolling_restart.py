"""Rolling restarts lose nothing (issue 11): two replicas of each service on loopback under a steady load of
Recommend and Feedback/Send from clients with the public retry policy; every replica of each service in
turn gets SIGTERM, drains (NOT_SERVING first, so the callers watching its health move to the other
replica; the calls in flight finish), exits 0 and is started again. No call fails, no answer is degraded,
and every accepted event is on the stream."""

from __future__ import annotations

import pytest

from recsys.chaos import SteadyLoad, rolling_restart, stream_event_ids
from recsys.cluster import start_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicated(small_bundle, tmp_path_factory):
    logs = tmp_path_factory.mktemp("rolling-logs")
    with start_cluster(small_bundle, port=0, log_dir=logs, replicas=2) as cluster:
        yield cluster


def test_the_cluster_runs_two_replicas_of_each_service(replicated) -> None:
    for kind in ("feature_svc", "candidate_svc", "ranker_svc"):
        replicas = replicated.replicas(kind)
        assert len(replicas) == 2 and len({r.port for r in replicas}) == 2
        assert replicated.address_of(kind) == "ipv4:" + ",".join(r.address for r in replicas)


def test_restarting_each_replica_in_turn_under_load_fails_no_call(replicated, small_dataset) -> None:
    users = [str(u) for u in small_dataset.interactions["user_id"].unique()[:200]]
    items = [str(i) for i in small_dataset.interactions["item_id"].unique()[:200]]
    load = SteadyLoad(replicated.target, users, items, rate=15, workers=4, retries=True).start()
    try:
        report = rolling_restart(replicated, load, on_event=print)
    finally:
        load.stop()
    print(report.as_dict())
    assert sorted(report.restart_s) == sorted(replicated.services)  # all six, each back SERVING
    assert all(svc.restarts == 1 and svc.proc.poll() is None for svc in replicated.services.values())
    assert report.calls > 100 * len(replicated.services) / 6  # the load ran all along
    assert report.failed == 0, report.failed_codes
    assert report.degraded == 0, report
    assert report.events_refused == 0, report
    assert not set(load.accepted) - stream_event_ids(replicated.stream)  # nothing accepted was lost
