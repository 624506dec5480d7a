"""Property: over thousands of random interleavings of Recommend and Feedback/Send against the real
services (two model versions, the per-user cache on), a just-interacted item is never returned and a
list computed for one model version is never served for another."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.bundle import read_metadata
from recsys.client import RecommenderClient, interaction
from recsys.cluster import start_cluster

pytestmark = pytest.mark.integration

USERS = [f"prop-user-{k}" for k in range(4)]


@pytest.fixture(scope="module")
def two_versions(small_bundle, small_dataset, tmp_path_factory):
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    cfg = small_train_config()
    cfg.seed = 11
    second = tmp_path_factory.mktemp("second") / "b"
    train(small_dataset, second, cfg, show_progress=False)
    known = [str(u) for u in small_dataset.interactions["user_id"].value_counts().index[20:24]]
    with start_cluster([small_bundle, second], port=0, metrics=False,
                       log_dir=tmp_path_factory.mktemp("prop-logs")) as c, RecommenderClient(c.target) as client:
        yield client, [read_metadata(small_bundle).version, read_metadata(second).version], USERS + known


op = st.one_of(
    st.tuples(st.just("rec"), st.integers(0, 7), st.integers(0, 1), st.sampled_from([3, 5, 10])),
    st.tuples(st.just("click"), st.integers(0, 7), st.integers(0, 9), st.integers(0, 0)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=10, max_size=40))
def test_recommend_and_send_interleavings(two_versions, ops):
    client, versions, users = two_versions
    clicked: dict[str, set[str]] = {}
    last: dict[str, list[str]] = {}
    for kind, u, a, b in ops:
        user = users[u]
        if kind == "rec":
            resp = client.recommend(user, b, model_version=versions[a])
            assert resp.model_version == versions[a]
            got = [it.item_id for it in resp.items]
            served = set(got) & clicked.get(user, set())
            assert not served, f"{'cached' if resp.cached else 'fresh'} list served interacted items {served}"
            last[user] = got
        elif last.get(user):
            item = last[user][a % len(last[user])]
            resp = client.send([interaction(user, item, "click")])
            assert resp.accepted == 1
            clicked.setdefault(user, set()).add(item)
