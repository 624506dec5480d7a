"""Failure of a dependency surfaces as a clear UNAVAILABLE, fast; the Redis backend serves the same path."""

from __future__ import annotations

import time

import pytest

from recsys.client import RecommenderClient
from recsys.cluster import start_cluster

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("victim", ["feature_svc", "candidate_svc"])
def test_dependency_down_is_a_prompt_degraded_answer_naming_it(small_bundle, tmp_path, victim):
    with start_cluster(small_bundle, port=0, metrics=False, log_dir=tmp_path) as c, \
            RecommenderClient(c.target) as client:
        assert len(client.recommend("some-user", 5).items) == 5
        proc = c.services[victim].proc
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        resp = client.recommend("some-user", 5, diversity_lambda=0.5, timeout=10)  # a cache miss
        assert time.monotonic() - t0 < 3.0  # not a hang until the caller's deadline
        assert resp.degraded.startswith(f"{victim} unavailable") and len(resp.items) == 5


@pytest.mark.redis
def test_cluster_on_redis_feature_store(small_bundle, small_dataset, redis_url, tmp_path):
    inter = small_dataset.interactions
    user = str(inter["user_id"].iloc[0])
    seen = set(inter.loc[inter["user_id"] == user, "item_id"])
    with start_cluster(small_bundle, port=0, metrics=False, storage=redis_url, log_dir=tmp_path) as c, \
            RecommenderClient(c.target) as client:
        resp = client.recommend(user, 10)
        assert len(resp.items) == 10 and not resp.cold_start
        assert not {it.item_id for it in resp.items} & seen
        assert all(it.title for it in resp.items)


@pytest.mark.redis
def test_features_load_command_fills_redis(small_bundle, redis_url):
    import subprocess
    import sys

    from recsys.feature_tables import FeatureTables
    from recsys.storage import open_storage

    r = subprocess.run([sys.executable, "-m", "recsys.cli", "features", "load", "--bundle", str(small_bundle),
                        "--storage", redis_url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tables = FeatureTables.load(small_bundle / "features")
    from recsys.bundle import read_metadata
    from recsys.storage import version_namespace

    store = open_storage(redis_url, namespace=version_namespace(read_metadata(small_bundle).version))
    try:
        item = store.get_items([str(tables.item_ids[0])])[0]
        assert item is not None and item.title == tables.item_titles[0]
    finally:
        store.close()
    bad = subprocess.run([sys.executable, "-m", "recsys.cli", "features", "load", "--bundle", "/nonexistent",
                          "--storage", redis_url], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "metadata.json" in bad.stdout
