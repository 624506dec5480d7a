"""Helpers of the feedback-loop tests: read a user's state straight from feature_svc, wait for it."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from recsys.v1 import features_pb2, features_pb2_grpc


def user_state(cluster, user: str) -> tuple[features_pb2.UserFeatures, list[str]]:
    """The user's record in feature_svc (default version) and the names its values align with."""
    with grpc.insecure_channel(cluster.services["feature_svc"].address) as ch:
        stub = features_pb2_grpc.FeatureStoreStub(ch)
        resp = stub.GetUserFeatures(features_pb2.GetUserFeaturesRequest(user_ids=[user]), timeout=5)
        return resp.users[0], list(resp.feature_names)


def counter(cluster, user: str, name: str = "user_n_interactions") -> float:
    rec, names = user_state(cluster, user)
    return rec.values[names.index(name)] if rec.found else 0.0


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> float:
    """Seconds until `check()` held; fails the test after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} did not hold within {timeout:.0f}s")
        time.sleep(0.02)
    return time.monotonic() - t0
