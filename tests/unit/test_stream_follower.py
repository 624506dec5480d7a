"""The ranker's stream follower with experiments and no in-process cache, on a real disk log: its child
joins clicks and purchases to the exposures they name and sends per-arm counts (and no cache notes), the
ranker's side turns them into metrics (per arm, and per model version for every exposure, in an experiment or
not), and stopping deletes only the replica's own group."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ranker_svc.stream_follower import StreamFollower, outcome_groups
from ranker_svc.stream_follower_child import follow
from recsys.client import interaction
from recsys.events.codec import EXPOSURE_TOPIC, encode_event, encode_exposure, now_ms
from recsys.stream import GroupNotFound, open_stream, topic_url
from recsys.v1 import recommender_pb2 as rpb
from recsys.v1 import stream_pb2 as spb


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:.0f} s")
        time.sleep(0.02)


def _exposure(rid: str, user: str, arm: str) -> bytes:
    """An exposure of model version "v" in arm `arm` of experiment "exp" ("" for none)."""
    e = spb.Exposure(request_id=rid, user_id=user, model_version="v",
                     items=[spb.ExposedItem(item_id=f"i{p}", position=p) for p in range(3)],
                     assignments=[rpb.Assignment(experiment="exp", arm=arm)] if arm else [])
    return encode_exposure(e, now_ms())


def _append_outcomes(url: str) -> None:
    """Clicks from another replica, the first before its exposure; a purchase; a click on another item; an
    exposure in no experiment and a click on it (counted for its model version only)."""
    events, exposures = open_stream(url), open_stream(topic_url(url, EXPOSURE_TOPIC))
    early = interaction("u1", "i0", "click", request_id="r1")
    events.append([(early.event_id, encode_event(early, now_ms(), producer="another-replica"))])
    exposures.append([(None, _exposure("r1", "u1", "a")), (None, _exposure("r2", "u2", "b")),
                      (None, _exposure("r3", "u3", ""))])
    later = [interaction("u1", "i2", "purchase", request_id="r1"), interaction("u2", "i1", "click", request_id="r2"),
             interaction("u2", "nope", "click", request_id="r2"), interaction("u3", "i0", "click", request_id="r3")]
    events.append([(ev.event_id, encode_event(ev, now_ms(), producer="another-replica")) for ev in later])


def test_with_experiments_only_the_child_sends_outcomes_and_no_notes(tmp_path):
    url = f"file://{tmp_path / 'events'}"
    groups = outcome_groups()
    open_stream(url).ensure_group(groups["events"], "end")
    for group in ("exposures", "impressions"):
        open_stream(topic_url(url, EXPOSURE_TOPIC)).ensure_group(groups[group], "end")
    reader, writer = multiprocessing.Pipe(duplex=False)
    settings = {"stream": url, "cache_group": None, "outcome_groups": groups, "consumer": "test-child",
                "producer": "this-replica", "batch": 100}
    child = threading.Thread(target=follow, args=(settings, writer), daemon=True)
    child.start()
    _append_outcomes(url)
    counts: dict = {}
    dropped: dict = {}
    kinds = set()
    metrics: dict = {}
    versions: dict = {}
    deadline = time.monotonic() + 15
    done = (1, 1, {"mismatched": 1}, 3)
    while (counts.get(("exp", "b", "clicks")), counts.get(("exp", "a", "conversions")), dropped,
           versions.get(("v", "clicks"))) != done:
        assert time.monotonic() < deadline, f"no outcomes from the child: {counts}"
        if reader.poll(0.1):
            message = reader.recv()
            kinds.add(message[0])
            if message[0] == "outcomes":
                for key, n in message[1].items():
                    counts[key] = counts.get(key, 0) + n
                for key, n in message[2].items():
                    dropped[key] = dropped.get(key, 0) + n
            elif message[0] == "versions":
                for key, n in message[1].items():
                    versions[key] = versions.get(key, 0) + n
            elif message[0] == "metrics":
                metrics = message[1]
    reader.close()  # the child sees a broken pipe and stops its loops
    child.join(10)
    assert not child.is_alive()
    assert counts == {("exp", "a", "impressions"): 3, ("exp", "b", "impressions"): 3, ("exp", "a", "clicks"): 1,
                      ("exp", "a", "conversions"): 1, ("exp", "b", "clicks"): 1}
    assert dropped == {"mismatched": 1}
    assert versions == {("v", "impressions"): 9, ("v", "clicks"): 3, ("v", "conversions"): 1}
    assert "notes" not in kinds  # no cache job: foreign interactions are not forwarded
    assert set(metrics) == set(groups.values())


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.timeout(60)
def test_the_follower_exports_per_arm_outcomes_and_deletes_only_its_own_group(tmp_path):
    url = f"file://{tmp_path / 'events'}"
    events, exposures = open_stream(url), open_stream(topic_url(url, EXPOSURE_TOPIC))
    follower = StreamFollower(url, None, "this-replica", 100, outcomes=True)
    assert follower.group is None and follower.groups() == list(outcome_groups().values())
    names = ("recsys_experiment_clicks_total", "recsys_experiment_conversions_total",
             "recsys_experiment_stream_impressions_total")
    before = {(n, arm): _sample(n, experiment="exp", arm=arm) for n in names for arm in "ab"}
    by_version = ("recsys_model_stream_impressions_total", "recsys_model_clicks_total",
                  "recsys_model_conversions_total")
    before_version = {n: _sample(n, version="v") for n in by_version}
    mismatched = _sample("recsys_experiment_outcomes_dropped_total", reason="mismatched")
    groups = outcome_groups()
    applied = _sample("recsys_stream_consumer_applied_total", group=groups["events"])
    follower.start(events, exposures)
    try:
        _append_outcomes(url)  # appended right after start: the groups exist, nothing is missed

        def delta() -> dict:
            return {key: _sample(key[0], experiment="exp", arm=key[1]) - v for key, v in before.items()}

        want = {(names[0], "a"): 1, (names[0], "b"): 1, (names[1], "a"): 1, (names[1], "b"): 0,
                (names[2], "a"): 3, (names[2], "b"): 3}
        _wait_for(lambda: delta() == want, 30, "the per-arm outcomes in the ranker's metrics")
        _wait_for(lambda: {n: _sample(n, version="v") - v for n, v in before_version.items()}
                  == dict(zip(by_version, (9, 3, 1), strict=True)), 10,
                  "the per-version outcomes in the ranker's metrics")
        assert _sample("recsys_experiment_outcomes_dropped_total", reason="mismatched") == mismatched + 1
        _wait_for(lambda: _sample("recsys_stream_consumer_applied_total", group=groups["events"]) >= applied + 2, 5,
                  "the child's consumer metrics in the ranker")
        # background work: the child yields the CPU to the serving processes (SCHED_IDLE, or nice 19 where
        # a container forbids it; field 19 of stat: nice)
        stat = Path(f"/proc/{follower._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert os.sched_getscheduler(follower._proc.pid) == os.SCHED_IDLE or int(stat[16]) == 19
    finally:
        follower.stop()
    with pytest.raises(GroupNotFound):
        exposures.lag(groups["exposures"])  # this replica's own: deleted
    assert exposures.lag(groups["impressions"]) == 0 and events.lag(groups["events"]) == 0  # shared: kept
