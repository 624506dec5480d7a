"""The re-rankers over real gRPC: each reachable per request, the default unchanged, bad values refused
naming the field, and an experiment arm's re-ranker applied (and a request's own winning over it)."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest

from recsys.client import RecommenderClient
from recsys.cluster import start_cluster
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

RERANKED = [{"reranker": "calibrated", "calibration_lambda": 1.0}, {"reranker": "category_caps", "category_cap": 1},
            {"reranker": "longtail", "longtail_beta": 1.0}]


@pytest.fixture(scope="module")
def users(small_dataset) -> list[str]:
    return [str(u) for u in small_dataset.interactions["user_id"].value_counts().index[:6]]


def _ids(resp: pb.RecommendResponse) -> list[str]:
    return [it.item_id for it in resp.items]


def _most_per_category(resp: pb.RecommendResponse) -> int:
    return max(Counter(c for it in resp.items for c in it.categories).values(), default=0)


def test_the_default_is_mmr_and_each_reranker_is_reachable(cluster, users, small_dataset):
    inter = small_dataset.interactions
    with RecommenderClient(cluster.target) as client:
        for user in users:
            default = client.recommend(user, 10)
            assert _ids(client.recommend(user, 10, reranker="mmr")) == _ids(default)
            relevance = client.recommend(user, 10, diversity_lambda=1.0)  # MMR off: what the others re-rank
            seen = set(inter.loc[inter["user_id"] == user, "item_id"])
            for fields in RERANKED:
                got = client.recommend(user, 10, diversity_lambda=1.0, **fields)  # λ is MMR's: ignored here
                assert len(got.items) == 10 and not set(_ids(got)) & seen, fields
                assert _ids(got) != _ids(relevance), fields
            caps = client.recommend(user, 10, reranker="category_caps", category_cap=1)
            # what the caps promise: no category more crowded than in the relevance list (the count of distinct
            # categories can drop when a multi-category item takes two of the cap's places at once)
            assert _most_per_category(caps) <= _most_per_category(relevance)


@pytest.mark.parametrize(("fields", "needle"), [
    ({"reranker": "shuffle"}, "reranker"), ({"calibration_lambda": 1.5}, "calibration_lambda"),
    ({"category_cap": 0}, "category_cap"), ({"longtail_beta": -1.0}, "longtail_beta"),
])
def test_bad_reranker_fields_are_invalid_argument_naming_the_field(cluster, fields, needle):
    with grpc.insecure_channel(cluster.target) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.RecommenderStub(ch).Recommend(pb.RecommendRequest(user_id="u1", k=5, **fields), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(needle)


FILE = """\
layers:
  - name: rerank
    salt: layer-rerank
    experiments:
      - name: tail
        salt: exp-tail
        status: running
        buckets: [0, 10000]
        coverage: 1
        arms:
          - {{name: control, weight: 0, control: true, model_version: {v}}}
          - {{name: longtail, weight: 1, model_version: {v}, reranker: longtail, longtail_beta: 1.0}}
"""


def test_an_arms_reranker_applies_and_a_requests_own_wins(small_bundle, users, tmp_path):
    """All answers from one fresh cluster: the session's cluster has items upserted by other tests, so its
    lists differ from a new cluster's. A pinned version is answered outside every experiment: the plain
    MMR answer to compare with."""
    from recsys.bundle import read_metadata

    version = read_metadata(small_bundle).version
    path = tmp_path / "experiments.yaml"
    path.write_text(FILE.format(v=version))
    with start_cluster(small_bundle, port=0, log_dir=tmp_path / "logs",
                       extra={"ranker_svc": ["--experiments", str(path)]}) as arms, \
            RecommenderClient(arms.target) as client:
        changed = 0
        for user in users:
            want_tail = _ids(client.recommend(user, 10, reranker="longtail", longtail_beta=1.0))
            want_mmr = _ids(client.recommend(user, 10, model_version=version))
            resp = client.recommend(user, 10)
            assert [(a.experiment, a.arm) for a in resp.assignments] == [("tail", "longtail")]
            assert _ids(resp) == want_tail
            assert _ids(client.recommend(user, 10, reranker="mmr")) == want_mmr
            changed += want_tail != want_mmr
        assert changed  # the arm's re-ranker visibly changes the answers
