"""A tiny run of `make bench`'s catalog-scale parts (recsys/bench_floor.py, bench_rate.py,
bench_production.py) on the session's small bundle, in a cluster of their own (the sweep restarts its
ranker): the measurements' shape and sanity, never a timed assertion (the figures belong to `make bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from recsys.bench_floor import PLAIN_RANKER, Floor, sweep
from recsys.bench_rate import max_rate
from recsys.bench_scale_report import print_scale
from recsys.bench_sweep import parse_counts
from recsys.cluster import start_cluster
from recsys.pipeline.recommend import recommend
from recsys.pipeline.types import RecommendParams
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plain(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    with start_cluster(small_bundle, port=0, extra={"ranker_svc": PLAIN_RANKER},
                       log_dir=tmp_path_factory.mktemp("bench-floor-logs")) as c:
        yield c


@pytest.fixture(scope="module")
def known_users(small_dataset) -> list[str]:
    return [str(u) for u in small_dataset.interactions["user_id"].unique()[:60]]


def test_the_floor_answers_what_the_cluster_answers_and_the_sweep_interleaves_them(plain, small_bundle, known_users):
    floor = Floor(small_bundle)
    try:
        rows = sweep(plain, floor, known_users, counts=(25, 60), requests=6, block=3)
        # same stages, same bundle, same requests: the floor's lists are the cluster's (at the last count, 60)
        assert "--n-candidates" in plain.services["ranker_svc"].cmd
        with grpc.insecure_channel(plain.target) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            for u in known_users[:4]:
                got = [i.item_id for i in stub.Recommend(pb.RecommendRequest(user_id=u, k=10), timeout=10).items]
                s = floor.stack.with_pipeline(n_candidates=60)
                rec = floor.loop.run_until_complete(recommend(RecommendParams(user_id=u, k=10), s.model, s.features,
                                                              s.candidates, s.pipeline))
                assert [i.item_id for i in rec.items] == got
    finally:
        floor.close()
    assert [r["n_candidates"] for r in rows] == [25, 60]
    for r in rows:
        assert r["cluster"]["n"] == r["floor"]["n"] == 6 and r["cluster"]["errors"] == r["floor"]["errors"] == 0
        for arm in ("cluster", "floor"):
            assert 0 < r[arm]["p50_ms"] <= r[arm]["p90_ms"] <= r[arm]["p99_ms"] <= r[arm]["max_ms"]
        assert r["cluster_over_floor_p50"] > 0 and "peer" not in r
        st = r["stages"]
        assert {"client → ranker", "fetch_user", "retrieve", "fetch_items", "featurize", "score"} <= set(st)
        assert st["retrieve"]["server_ms"] > 0 and st["retrieve"]["floor_ms"] > 0
        assert st["retrieve"]["hop_ms"] == pytest.approx(st["retrieve"]["ranker_ms"] - st["retrieve"]["server_ms"])
    out = {"indexes": {"exact": {"sweep": rows, "cluster_start_s": 1.0, "floor_load_s": 1.0, "rss_mb": {"x": 1.0},
                                 "rss_mb_after": {"x": 1.0}, "throughput": {}}}}
    console = Console(width=200, record=True)
    print_scale(out, console, 600)
    assert "cluster/floor p50" in console.export_text()


def test_the_rate_search_reports_each_offered_rate(plain, known_users):
    out = max_rate(plain.target, known_users, start_rps=20, p99_ms=5000, duration_s=0.5, growth=2.0, max_rps=25)
    rates = [p["offered_rps"] for p in out["points"]]
    assert rates == [10.0, 20.0] and out["max_rps"] == 20.0 and out["first_failed_rps"] is None
    assert all(p["held"] and p["ok"] == p["sent"] for p in out["points"])
    # a bound nothing meets: no rate is held, and the search says so instead of inventing one
    none = max_rate(plain.target, known_users, start_rps=20, p99_ms=1e-6, duration_s=0.3, max_rps=25)
    assert none["max_rps"] == 0.0 and not any(p["held"] for p in none["points"])


def test_production_paths_report_the_cache_miss_and_hit_apart(plain, small_bundle, known_users, tmp_path):
    from recsys.bench_production import production_paths

    out = production_paths(plain, small_bundle, known_users[20:], tmp_path, Console(quiet=True),
                           n_candidates=60, requests=6, block=3)
    assert {out[a]["n"] for a in ("plain", "miss", "hit")} == {6}
    assert out["miss"]["cached_share"] == 0.0 and out["hit"]["cached_share"] == 1.0
    assert out["plain"]["cached_share"] == 0.0  # the plain cluster's cache is off
    assert set(out["rss_mb"]) == {"feature_svc", "candidate_svc", "ranker_svc"}


def test_candidate_counts_are_checked():
    assert parse_counts("25,100,300,500") == [25, 100, 300, 500]
    for bad in ("", "25,x", "0", "6000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_counts(bad)
