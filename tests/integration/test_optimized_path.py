"""The optimized Recommend path serves the answers of the reference path (issue 13: every speed-up keeps the
served lists identical). Reference: the pipeline in one process scoring with LightGBM's own predict;
optimized: the three services on loopback (packed item features on the wire, the compiled trees), on the
same bundle and the same users, known and unknown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.client import RecommenderClient
from recsys.cluster import start_cluster
from recsys.pipeline.model import ServingModel
from recsys.pipeline.offline import OfflineStack
from recsys.ranking import compiled

pytestmark = pytest.mark.integration
K = 10


@pytest.fixture(scope="module")
def reference(small_bundle: Path) -> OfflineStack:
    stack = OfflineStack.from_bundle(small_bundle)
    stack.model = ServingModel.load(small_bundle, compile_trees=False)
    stack.candidates.version = stack.model.version
    assert stack.model.ranker.compiled is None
    return stack


@pytest.fixture(scope="module")
def users(small_dataset) -> list[str]:
    known = sorted(map(str, small_dataset.interactions["user_id"].unique()))
    return known[::4] + ["never-seen-user"]


@pytest.mark.skipif(not compiled.available(), reason="lleaves is not installed")
def test_the_compiled_trees_rank_like_lightgbm_in_process(small_bundle, reference, users):
    model = ServingModel.load(small_bundle)
    assert model.ranker.use_trees and model.ranker.compiled is not None
    fast = OfflineStack.from_bundle(small_bundle)
    assert fast.model.ranker.compiled is not None
    want = reference.recommend_many(users, K)
    got = fast.recommend_many(users, K)
    for u in users:
        assert [it.item_id for it in got[u].items] == [it.item_id for it in want[u].items], u
        np.testing.assert_allclose([it.score for it in got[u].items], [it.score for it in want[u].items],
                                   rtol=0, atol=1e-6)


def test_the_services_serve_the_reference_lists(small_bundle, reference, users, tmp_path):
    want = reference.recommend_many(users, K)
    with start_cluster(small_bundle, port=0, log_dir=tmp_path) as cluster, \
            RecommenderClient(cluster.target) as client:
        got = {u: client.recommend(u, K) for u in users}
    for u in users:
        assert not got[u].fallback and not got[u].degraded, u
        assert [it.item_id for it in got[u].items] == [it.item_id for it in want[u].items], u
        assert [list(it.sources) for it in got[u].items] == [it.sources for it in want[u].items], u
        assert [it.title for it in got[u].items] == [it.title for it in want[u].items], u
        np.testing.assert_allclose([it.score for it in got[u].items], [it.score for it in want[u].items],
                                   rtol=0, atol=1e-6)
