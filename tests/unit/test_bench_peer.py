"""A tiny run of `make bench`'s Ray Serve peer (recsys/bench_peer.py): the same stages composed as three
Ray Serve deployments behind Ray Serve's HTTP ingress answer what the in-process pipeline answers on the
same bundle. Runs only with the bench extra (ray[serve]); never a timed assertion."""

from __future__ import annotations

import pytest

from recsys.bench_peer import Peer, missing
from recsys.pipeline.offline import OfflineStack

pytestmark = pytest.mark.integration


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_the_ray_serve_peer_answers_what_the_pipeline_answers(small_bundle, small_dataset):
    users = [str(u) for u in small_dataset.interactions["user_id"].unique()[:3]] + ["a-user-never-seen"]
    stack = OfflineStack.from_bundle(small_bundle)
    want = {u: [i.item_id for i in r.items] for u, r in stack.with_pipeline(n_candidates=60)
            .recommend_many(users, k=10).items()}
    with Peer(small_bundle) as peer:
        assert peer.start_s > 0
        assert {u: peer.call(u, 10, 60) for u in users} == want
        lat, errors = peer.sequential(users, 10, 60)
        assert errors == 0 and len(lat) == len(users) and all(x > 0 for x in lat)
    assert peer.proc is not None and peer.proc.returncode == 0  # Serve and Ray shut down cleanly

