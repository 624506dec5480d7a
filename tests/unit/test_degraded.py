"""Degraded answers (ranker_svc/degraded.py), rate-limited logging (recsys/log_limit.py) and the
supervision of `recsys up`'s children (Cluster.supervise), each on real objects."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ranker_svc.degraded import DegradedAnswers
from recsys.cluster import Cluster, Service, _spawn
from recsys.log_limit import RateLimitedLog
from recsys.pipeline.model import ItemEmbeddings, ServingModel
from recsys.ranking.model import RankerModel
from recsys.v1 import recommender_pb2 as pb


def _model(version: str = "v1") -> ServingModel:
    ids = np.array([f"i{i}" for i in range(6)])
    return ServingModel(version=version, created=0.0, ranker=RankerModel(None, [], use_trees=False),
                        embeddings=ItemEmbeddings.from_factors(ids, np.eye(6, dtype=np.float32)),
                        popular=["i5", "i4", "i3", "i2", "i1", "i0"])


def _resp(items: list[str], version: str = "v1", **fields) -> pb.RecommendResponse:
    return pb.RecommendResponse(items=[pb.RecommendedItem(item_id=i) for i in items], model_version=version, **fields)


def test_the_last_good_list_answers_first_then_popular_items_fill_it() -> None:
    d = DegradedAnswers()
    d.remember("u1", _resp(["i0", "i1", "i2"]))
    got = d.answer("u1", 4, _model(), "feature_svc", exclude=["i1"], diversity_lambda=0.8)
    assert [it.item_id for it in got.items] == ["i0", "i2", "i5", "i4"]
    assert got.degraded == "feature_svc unavailable: last good list" and got.model_version == "v1"
    other = d.answer("u2", 2, _model(), "candidate_svc", exclude=["i5"], diversity_lambda=0.8)
    assert [it.item_id for it in other.items] == ["i4", "i3"] and other.degraded.endswith("popular items")
    # another version's list is not this version's answer
    assert d.answer("u1", 2, _model("v2"), "feature_svc", [], 0.8).degraded.endswith("popular items")


def test_only_normal_answers_are_remembered_and_memory_is_bounded() -> None:
    d = DegradedAnswers(capacity=2)
    for user, resp in (("a", _resp(["i0"], fallback=True)), ("b", _resp(["i0"], cold_start=True)),
                       ("c", _resp(["i0"], degraded="x")), ("d", _resp([]))):
        d.remember(user, resp)
    assert len(d) == 0
    for user in ("e", "f", "g"):
        d.remember(user, _resp(["i1"]))
    assert len(d) == 2
    assert d.answer("e", 1, _model(), "feature_svc", [], 0.8).degraded.endswith("popular items")  # evicted


def test_nothing_to_serve_is_none() -> None:
    empty = _model()
    empty.popular = []
    assert DegradedAnswers().answer("u", 3, empty, "feature_svc", [], 0.8) is None


def test_one_line_per_kind_of_failure_per_interval(caplog) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        logged = [limited.warning(("feature_svc", "UNAVAILABLE"), "down %d", n) for n in range(1000)]
        limited.warning(("candidate_svc", "UNAVAILABLE"), "other")
        now[0] = 11.0
        limited.warning(("feature_svc", "UNAVAILABLE"), "down again")
    assert sum(logged) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "down 0", "other", "down again (and 999 more like it in the last 11 s)"]


def test_a_dead_child_is_restarted_with_backoff(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))", "0"]
    log = tmp_path / "svc.log"
    svc = Service("svc", 0, 0, _spawn(cmd, {}, log), log, cmd, {})
    cluster = Cluster({"svc": svc})
    svc.proc.wait(5)
    t0 = time.monotonic()
    assert cluster.supervise(t0) == ["svc exited with code 0; restarting in 0.5 s"]
    assert cluster.supervise(t0 + 0.1) == []  # still backing off
    first = svc.proc
    assert "restarted" in cluster.supervise(t0 + 0.6)[0] and svc.proc is not first and svc.restarts == 1
    svc.proc.wait(5)
    assert "restarting in 1.0 s" in cluster.supervise(t0 + 0.7)[0]  # died again at once: longer backoff
    cluster.services["svc"].cmd = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert "restarted" in cluster.supervise(t0 + 1.8)[0]
    assert cluster.supervise(t0 + 2.0) == [] and svc.proc.poll() is None  # up: left alone
    svc.proc.kill()
    svc.proc.wait(5)
    assert isinstance(svc.proc, subprocess.Popen)
