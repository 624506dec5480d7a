"""Users/Forget through the real services on loopback (issue 11, item 10): a known user with a history,
cached lists, last good lists, events and exposures on the stream is erased everywhere; the next Recommend
is a cold start; a feature_svc restart does not bring the bundle's rows back; the callers file must name
the method. Once on the embedded backend (disk log, in-process cache), once on Redis (storage, stream,
cache)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis
import yaml

from recsys.cli import main as cli_main
from recsys.client import RecommenderClient, interaction
from recsys.cluster import Cluster, _spawn, free_port, start_cluster, wait_healthy
from recsys.events.codec import EXPOSURE_TOPIC, decode
from recsys.events.forget import names_user
from recsys.feature_tables import FeatureTables
from recsys.forget import open_tombstones, user_digest
from recsys.stream import open_stream, topic_url
from recsys.v1 import features_pb2, features_pb2_grpc, users_pb2, users_pb2_grpc

pytestmark = pytest.mark.integration

ADMIN, WILD = "admin-" + "7" * 40, "wild-" + "8" * 40


def _callers(tmp_path: Path) -> Path:
    path = tmp_path / "callers.yaml"
    path.write_text(yaml.safe_dump({"callers": [
        {"name": "privacy-desk", "token_sha256": hashlib.sha256(ADMIN.encode()).hexdigest(),
         "methods": ["Recommend", "Feedback", "Users/Forget"]},
        {"name": "wildcard", "token_sha256": hashlib.sha256(WILD.encode()).hexdigest(), "methods": ["*"]}]}))
    return path


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.05)


def _user_features(cluster: Cluster | str, user: str) -> features_pb2.UserFeatures:
    address = cluster if isinstance(cluster, str) else cluster.services["feature_svc"].address
    with grpc.insecure_channel(address) as ch:
        resp = features_pb2_grpc.FeatureStoreStub(ch).GetUserFeatures(
            features_pb2.GetUserFeaturesRequest(user_ids=[user]), timeout=5)
    return resp.users[0]


def _naming(url: str, user: str) -> list[str]:
    """The kinds of the retained records (entries and dead letters) of a stream that name the user."""
    stream = open_stream(url)
    try:
        records = [decode(e.data) for e in stream.scan(count=1_000_000)]
        records += [decode(d.data) for d in stream.dead_letters(count=1_000_000)]
    finally:
        stream.close()
    return [r.WhichOneof("kind") for r in records if names_user(r, user) or
            (r.WhichOneof("kind") == "forget" and r.forget.user_id == user)]


def _known_user(bundle: Path) -> str:
    tables = FeatureTables.load(bundle / "features")
    return max(zip(tables.user_ids.tolist(), tables.user_history, strict=True), key=lambda p: len(p[1]))[0]


def _forget_everywhere(cluster: Cluster, stream_url: str, user: str,
                       also: Callable[[], None] = lambda: None) -> None:
    """The scenario both backends share."""
    with RecommenderClient(cluster.target, token=ADMIN) as c:
        first = c.recommend(user, 10)
        assert not first.cold_start and first.items and not first.degraded, first
        assert c.recommend(user, 10).cached  # a cached list, and the first answer is a last good list
        item = next(it.item_id for it in first.items)
        c.send([interaction(user, item, "click")])
        _wait_for(lambda: _user_features(cluster, user).history[-1:] == [item], "the click reaching feature_svc")
        _wait_for(lambda: "exposure" in _naming(topic_url(stream_url, EXPOSURE_TOPIC), user), "the exposures")
        assert _naming(stream_url, user) == ["event"]

        users = users_pb2_grpc.UsersStub(c.channel)
        for bad, field in (("", "user_id must be non-empty"), ("u" * 600, "user_id must be at most 512")):
            with pytest.raises(grpc.RpcError) as err:
                users.Forget(users_pb2.ForgetRequest(user_id=bad), timeout=10, metadata=c.auth)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()
        with RecommenderClient(cluster.target, token=WILD) as wild, pytest.raises(grpc.RpcError) as err:
            users_pb2_grpc.UsersStub(wild.channel).Forget(users_pb2.ForgetRequest(user_id=user), timeout=10,
                                                          metadata=wild.auth)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # "*" does not grant Forget
        assert _user_features(cluster, user).found

        resp = users.Forget(users_pb2.ForgetRequest(user_id=user), timeout=60, metadata=c.auth)
        erased = dict(resp.erased)
        assert erased["features.records"] == 1 and erased["features.history_items"] >= 2, erased
        assert erased["stream.events"] == 1 and erased["stream.exposures"] >= 2, erased
        assert erased["cache.lists"] >= 1 and erased["degraded.lists"] == 1, erased
        assert resp.receipt_id and resp.user_sha256 == user_digest(user)
        also()

        after = c.recommend(user, 10)
        assert after.cold_start and not after.cached  # treated as new
        assert not _user_features(cluster, user).found
        assert _naming(stream_url, user) == ["forget"]  # the record every replica applies, and nothing else
        assert _naming(topic_url(stream_url, EXPOSURE_TOPIC), user) in ([], ["exposure"])  # at most the new one
        with open_tombstones(stream_url) as registry:
            (receipt,) = [t for t in registry.receipts() if t.receipt == resp.receipt_id]
        assert receipt.done and receipt.caller == "privacy-desk" and receipt.erased == erased
        assert receipt.digest == user_digest(user)

        _restart(cluster, "feature_svc")  # reloads the bundle, replays the stream: the user stays forgotten
        assert not _user_features(cluster, user).found
        answers: list = []
        _wait_for(lambda: not answers.append(c.recommend(user, 10)) and not answers[-1].degraded, "the reconnect")
        assert answers[-1].cold_start
        assert all(it.sources == ["popular"] for a in answers[:-1] for it in a.items)  # never their last good list
        c.send([interaction(user, item, "view")])  # they come back: a new user with one item
        _wait_for(lambda: list(_user_features(cluster, user).history) == [item], "the new history")


def _restart(cluster: Cluster, name: str) -> None:
    svc = cluster.services[name]
    before = svc.restarts
    svc.proc.terminate()
    svc.proc.wait(10)
    deadline = time.monotonic() + 30
    while svc.restarts == before:
        assert time.monotonic() < deadline, f"{name} was not restarted"
        cluster.supervise()
        time.sleep(0.1)
    wait_healthy(svc.address, 60, svc.proc, name)


def _second_replica(cluster: Cluster, name: str) -> tuple[subprocess.Popen, str]:
    """Another replica of a service (its own ports, its own embedded store and consumer group)."""
    svc = cluster.services[name]
    port, cmd = free_port(), list(svc.cmd)
    cmd[cmd.index("--port") + 1], cmd[cmd.index("--metrics-port") + 1] = str(port), "0"
    proc = _spawn(cmd, {**svc.env, "RECSYS_REPLICA": f"{name}-2"}, svc.log_path.with_name(f"{name}-2.log"))
    address = f"127.0.0.1:{port}"
    wait_healthy(address, 60, proc, f"{name}-2")
    return proc, address


def test_forget_on_the_embedded_backend(small_bundle: Path, tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    cluster = start_cluster(small_bundle, port=0, log_dir=logs,
                            extra={"ranker_svc": ["--callers", str(_callers(tmp_path))]})
    replica = None
    try:
        user = _known_user(small_bundle)
        replica, replica_address = _second_replica(cluster, "feature_svc")  # the call reaches only the first
        assert _user_features(replica_address, user).found

        def the_other_replica_hears_it() -> None:
            _wait_for(lambda: not _user_features(replica_address, user).found, "the second replica's erasure", 10)

        _forget_everywhere(cluster, f"file://{(logs / 'events').resolve()}", user, the_other_replica_hears_it)
        # the command line, with the token from the environment, for another known user
        other = FeatureTables.load(small_bundle / "features").user_ids.tolist()[1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RECSYS_CLIENT_TOKEN", ADMIN)
            assert cli_main(["users", "forget", other, "--target", cluster.target]) == 0
        out = capsys.readouterr().out
        assert "features.records" in out and "receipt" in out
        assert not _user_features(cluster, other).found
        assert cli_main(["users", "receipts", "--stream", f"file://{(logs / 'events').resolve()}"]) == 0
        assert "privacy-desk" in capsys.readouterr().out

        # feature_svc down: UNAVAILABLE saying so, and the stream's forget record finishes the job
        third = FeatureTables.load(small_bundle / "features").user_ids.tolist()[2]
        feature = cluster.services["feature_svc"]
        feature.proc.terminate()
        feature.proc.wait(10)
        with RecommenderClient(cluster.target, token=ADMIN) as c, pytest.raises(grpc.RpcError) as err:
            users_pb2_grpc.UsersStub(c.channel).Forget(users_pb2.ForgetRequest(user_id=third), timeout=30,
                                                       metadata=c.auth)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "feature_svc" in err.value.details()
        assert _naming(f"file://{(logs / 'events').resolve()}", third) == ["forget"]
        _restart(cluster, "feature_svc")
        assert not _user_features(cluster, third).found
        assert not _user_features(replica_address, third).found  # the other replica applied the record
    finally:
        if replica is not None:
            replica.terminate()
            replica.wait(10)
        cluster.stop()


@pytest.mark.redis
def test_forget_on_redis_storage_stream_and_cache(small_bundle: Path, tmp_path: Path, redis_url: str) -> None:
    stream_url = f"{redis_url}?key=fg:events"
    cluster = start_cluster(small_bundle, port=0, log_dir=tmp_path / "logs", storage=redis_url, stream=stream_url,
                            extra={"ranker_svc": ["--callers", str(_callers(tmp_path)),
                                                  "--cache", f"{redis_url}?prefix=fg:cache"]})
    try:
        user = _known_user(small_bundle)

        def no_key_of_the_user() -> None:  # right after the forget (the cold-start answer makes new ones)
            client = redis.Redis.from_url(redis_url)
            try:
                keys = [k.decode("utf-8", "replace") for k in client.keys("*")]
            finally:
                client.close()
            assert any(k.endswith(":u:u1") for k in keys)  # the others' feature records are there
            assert [k for k in keys if f"{{{user}}}" in k or k.endswith((f":u:{user}", f":h:{user}"))] == []

        _forget_everywhere(cluster, stream_url, user, no_key_of_the_user)
    finally:
        cluster.stop()
