"""Overload and deadlines on the real services (issue 11, items 2 and 3), with the probe's cases:

- 200 concurrent callers with a 100 ms deadline: 0.75% succeeded while downstream still did the work of
  the doomed calls. Now the ranker sheds what it cannot start (RESOURCE_EXHAUSTED, at once), the calls it
  admits finish in time, and feature_svc does (almost) no work for calls that fail;
- one GetUserFeatures naming a long-history user 10,000 times, with a size limit that lets it through:
  feature_svc stops building the answer when the caller's deadline passes;
- twice the saturating load: shed calls get RESOURCE_EXHAUSTED quickly, the p99 of the admitted calls stays
  bounded (far below the deadline it would reach in a queue), memory stays bounded, nothing crashes.

The cluster runs without the per-user cache (every call does the full work) and with a ranker admitting
4 calls at a time, about the concurrency at which its throughput stops growing on a small machine.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from grpc import aio

from recsys.bench_overload import overload_curve
from recsys.cluster import start_cluster
from recsys.v1 import features_pb2 as fpb
from recsys.v1 import features_pb2_grpc as fpb_grpc
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from .load_helpers import Counters, PeakRSS

pytestmark = pytest.mark.integration
RANKER_IN_FLIGHT = 4
USERS = [f"u{i}" for i in range(400)]


@pytest.fixture(scope="module")
def loaded(small_bundle, tmp_path_factory):
    c = start_cluster(small_bundle, port=0, log_dir=tmp_path_factory.mktemp("overload-logs"), extra={
        "ranker_svc": ["--cache", "none", "--max-in-flight", str(RANKER_IN_FLIGHT), "--no-exposures"],
        # big enough that only the deadline can stop the 10,000-user answer below
        "feature_svc": ["--max-message-bytes", str(256 * 1024 * 1024)],
    })
    try:
        yield c
    finally:
        c.stop()


async def _callers(target: str, n: int, deadline_s: float, duration_s: float) -> dict[str, int]:
    """`n` callers in a loop, each waiting for its answer (`deadline_s` at most) before its next call, as in
    the probe; a caller told RESOURCE_EXHAUSTED backs off as the message asks (jittered, from 100 ms)."""
    outcomes: dict[str, int] = {}
    stop = time.monotonic() + duration_s
    rng = random.Random(7)
    async with aio.insecure_channel(target) as ch:
        stub = pb_grpc.RecommenderStub(ch)

        async def caller(i: int) -> None:
            backoff = 0.1
            while time.monotonic() < stop:
                try:
                    await stub.Recommend(pb.RecommendRequest(user_id=USERS[i % len(USERS)], k=10), timeout=deadline_s)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                outcomes[code] = outcomes.get(code, 0) + 1
                if code == "RESOURCE_EXHAUSTED":
                    await asyncio.sleep(rng.uniform(0.5, 1.0) * backoff)
                    backoff = min(2.0, backoff * 2)
                else:
                    backoff = 0.1
                i += n

        await asyncio.gather(*(caller(i) for i in range(n)))
    return outcomes


@pytest.mark.skipif(__import__("os").environ.get("RECSYS_LOAD_TESTS") != "1",
                    reason="goodput under 200 callers depends on an otherwise idle machine: RECSYS_LOAD_TESTS=1")
def test_200_callers_with_a_100ms_deadline_get_answers_and_cost_no_doomed_downstream_work(loaded):
    ranker, feature = loaded.services["ranker_svc"], loaded.services["feature_svc"]
    light = asyncio.run(_callers(loaded.target, RANKER_IN_FLIGHT, 1.0, 1.5))  # what the ranker can answer
    capacity = light.get("OK", 0) / 1.5
    ranker_counts, feature_counts = Counters(ranker.metrics_port), Counters(feature.metrics_port)
    outcomes = asyncio.run(_callers(loaded.target, 200, 0.1, 3.0))
    time.sleep(0.3)  # downstream calls cancelled with their callers finish
    ok = ranker_counts.delta("grpc_server_handled_total", grpc_method="Recommend", grpc_code="OK")
    served = feature_counts.delta("grpc_server_handled_total", grpc_method="GetUserFeatures", grpc_code="OK")
    shed = ranker_counts.delta("recsys_grpc_server_rejected_total", grpc_method="Recommend", reason="overloaded")
    late = ranker_counts.delta("recsys_grpc_server_rejected_total", grpc_method="Recommend", reason="deadline")
    print(f"capacity {capacity:.0f}/s; outcomes {outcomes}; the ranker answered {ok:.0f} OK, refused {shed:.0f} "
          f"(overloaded) and {late:.0f} (deadline); feature_svc answered {served:.0f} GetUserFeatures")
    answered = outcomes.get("OK", 0)
    # (0.75% before admission control; 0.3 of the measured capacity leaves room for a loaded CI machine)
    assert answered / 3.0 >= 0.3 * capacity, f"{answered / 3.0:.0f} answers/s of {capacity:.0f}: {outcomes}"
    assert answered >= 0.8 * ok, "the ranker's answers must reach their callers in time"
    assert shed == outcomes.get("RESOURCE_EXHAUSTED", 0) > 0  # every shed call is in the metrics
    # downstream work for calls that failed anyway: only for some that were in flight at their deadline
    assert served - ok <= 10 + 0.25 * ok, f"{served - ok:.0f} GetUserFeatures answers were wasted"
    assert all(svc.proc.poll() is None for svc in loaded.services.values())


def test_the_feature_store_stops_building_an_answer_when_the_deadline_passes(loaded):
    feature = loaded.services["feature_svc"]
    with grpc.insecure_channel(feature.address) as ch:
        stub = fpb_grpc.FeatureStoreStub(ch)
        events = [fpb.Event(user_id="long", item_id=f"x-{i:04d}", event="view") for i in range(1000)]
        stub.RecordEvents(fpb.RecordEventsRequest(events=events), timeout=10)
        counts = Counters(feature.metrics_port)
        with PeakRSS(feature.proc.pid) as rss:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.GetUserFeatures(fpb.GetUserFeaturesRequest(user_ids=["long"] * 10_000), timeout=0.3)
            time.sleep(0.3)
            # the service is idle again: it did not keep building 10 million history entries
            t1 = time.monotonic()
            stub.GetUserFeatures(fpb.GetUserFeaturesRequest(user_ids=["u1"]), timeout=2)
            after = time.monotonic() - t1
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0 and after < 0.3
    handled = counts.delta("grpc_server_handling_seconds_sum", grpc_method="GetUserFeatures")
    assert handled < 1.0, f"feature_svc worked {handled:.2f} s on calls with a 0.3 s deadline"
    assert counts.delta("grpc_server_handled_total", grpc_method="GetUserFeatures", grpc_code="DEADLINE_EXCEEDED") == 1
    assert rss.growth_mb < 400, f"feature_svc grew by {rss.growth_mb:.0f} MB"


def test_twice_the_saturating_load_is_shed_quickly_and_the_admitted_p99_stays_bounded(loaded):
    ranker = loaded.services["ranker_svc"]
    with PeakRSS(ranker.proc.pid) as rss:
        curve = overload_curve(loaded.target, USERS, multiples=(1.0, 2.0), duration_s=2.0, timeout_s=1.0)
    at1, at2 = curve["points"]
    print({k: curve[k] for k in ("saturating_rps", "saturating_concurrency")}, at1, at2, sep="\n")
    assert at2["shed"] > 0
    # refused quickly, not after waiting in a queue (what waits is the arrival, behind the admitted work)
    assert at2["shed_p50_ms"] < 100 and at2["shed_p99_ms"] < 400, at2
    assert at2["deadline"] + at2["other"] <= 0.02 * at2["sent"]
    assert at2["p99_ms"] < 500, "an admitted call must not wait in a queue until near its 1 s deadline"
    assert at2["admitted_rps"] >= 0.6 * curve["saturating_rps"], "shedding must not cost the admitted throughput"
    assert rss.growth_mb < 100
    assert all(svc.proc.poll() is None for svc in loaded.services.values())
