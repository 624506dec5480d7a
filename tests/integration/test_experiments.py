"""Experiments through the real services: two ranker versions, arms answered end to end by their own
version, assignments in the response and on the exposure, forced arms, reloads of the file, per-arm
clicks and conversions joined online from the stream."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from recsys.bundle import read_metadata
from recsys.client import RecommenderClient, interaction
from recsys.cluster import start_cluster
from recsys.events.codec import EXPOSURE_TOPIC, decode
from recsys.scrape import scrape
from recsys.stream import open_stream, topic_url
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from .feedback_helpers import wait_for

pytestmark = pytest.mark.integration

FILE = """\
layers:
  - name: models
    salt: layer-models
    experiments:
      - name: ranker
        salt: exp-ranker
        status: running
        buckets: [0, 10000]
        coverage: {coverage}
        arms:
          - {{name: control, weight: 1, control: true, model_version: {v1}}}
          - {{name: challenger, weight: 1, model_version: {v2}, diversity_lambda: 0.5}}
"""


@pytest.fixture(scope="module")
def versions(small_bundle, small_dataset, tmp_path_factory) -> tuple[Path, Path]:
    from recsys.training.trainer import train
    from tests.conftest import small_train_config

    cfg = small_train_config()
    cfg.seed = 7
    second = tmp_path_factory.mktemp("challenger") / "bundle"
    train(small_dataset, second, cfg, show_progress=False)
    return small_bundle, second


@pytest.fixture(scope="module")
def experiment(versions, tmp_path_factory):
    v1, v2 = (read_metadata(b).version for b in versions)
    path = tmp_path_factory.mktemp("experiments") / "experiments.yaml"
    path.write_text(FILE.format(coverage=1, v1=v1, v2=v2))
    logs = tmp_path_factory.mktemp("experiment-logs")
    with start_cluster(list(versions), port=0, log_dir=logs,
                       # the service's λ (0.8) for arms without their own, not each bundle's chosen re-ranker
                       extra={"ranker_svc": ["--experiments", str(path), "--experiments-reload-s", "0.2",
                                             "--no-bundle-reranker"]}) as c:
        yield c, path, v1, v2


def _users(small_dataset) -> list[str]:
    return [str(u) for u in small_dataset.interactions["user_id"].unique()[:80]]


def test_each_arm_is_answered_by_its_own_version_and_sticks(experiment, small_dataset):
    cluster, _, v1, v2 = experiment
    seen: dict[str, str] = {}
    with RecommenderClient(cluster.target) as client:
        for user in _users(small_dataset):
            resp = client.recommend(user, 5)
            [a] = resp.assignments
            assert a.experiment == "ranker" and not a.forced
            assert resp.model_version == (v2 if a.arm == "challenger" else v1)
            assert resp.diversity_lambda == pytest.approx(0.5 if a.arm == "challenger" else 0.8)
            seen[user] = a.arm
        again = {u: client.recommend(u, 5).assignments[0].arm for u in list(seen)[:20]}
    assert all(seen[u] == arm for u, arm in again.items())
    assert 0.25 < sum(arm == "challenger" for arm in seen.values()) / len(seen) < 0.75


def test_exposures_carry_the_assignments(experiment, small_dataset):
    cluster, *_ = experiment
    with RecommenderClient(cluster.target) as client:
        resp = client.recommend(_users(small_dataset)[3], 5)
    stream = open_stream(topic_url(f"file://{cluster.log_dir / 'events'}", EXPOSURE_TOPIC))

    def logged():
        for entry in stream.scan():
            exp = decode(entry.data).exposure
            if exp.request_id == resp.request_id:
                return exp
        return None

    wait_for(lambda: logged() is not None, 5, "the exposure on the stream")
    exp = logged()
    assert [(a.experiment, a.arm) for a in exp.assignments] == [(a.experiment, a.arm) for a in resp.assignments]
    assert exp.model_version == resp.model_version


def test_a_forced_arm_is_labelled_and_a_bad_one_refused(experiment, small_dataset):
    cluster, _, _, v2 = experiment
    with grpc.insecure_channel(cluster.target) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        resp = stub.Recommend(pb.RecommendRequest(user_id=_users(small_dataset)[0], k=5,
                                                  force_arms={"ranker": "challenger"}), timeout=10)
        assert [(a.arm, a.forced) for a in resp.assignments] == [("challenger", True)] and resp.model_version == v2
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(pb.RecommendRequest(user_id="u", k=5, force_arms={"ranker": "nope"}), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "force_arms" in err.value.details()
    metrics = scrape(cluster.services["ranker_svc"].metrics_port)
    forced = [v for (name, labels), v in metrics.items() if name == "recsys_experiment_requests_total"
              and dict(labels)["forced"] == "true"]
    assert sum(forced) >= 1
    shown = [v for (name, labels), v in metrics.items() if name == "recsys_experiment_impressions_total"]
    assert sum(shown) >= 5
    arms = {(dict(labels)["arm"], dict(labels)["control"]): v for (name, labels), v in metrics.items()
            if name == "recsys_experiment_arm" and dict(labels)["experiment"] == "ranker"}
    assert arms == {("control", "true"): 0.5, ("challenger", "false"): 0.5}  # what the alerts compare against


def test_the_file_is_reloaded_and_an_invalid_one_keeps_the_old(experiment, small_dataset):
    cluster, path, v1, v2 = experiment
    user = _users(small_dataset)[1]

    def loads(result: str) -> float:
        return scrape(cluster.services["ranker_svc"].metrics_port).get(
            ("recsys_experiments_config_loads_total", (("result", result),)), 0.0)

    with RecommenderClient(cluster.target) as client:
        assert client.recommend(user, 5).assignments
        invalid_before = loads("invalid")
        path.write_text(FILE.format(coverage=1, v1=v1, v2="not-a-live-version"))
        wait_for(lambda: loads("invalid") > invalid_before, 5, "the invalid file being rejected")
        assert client.recommend(user, 5).assignments  # the previous file still serves
        path.write_text(FILE.format(coverage=0, v1=v1, v2=v2))  # nobody admitted
        wait_for(lambda: not client.recommend(user, 5).assignments, 5, "the new file taking effect")
        path.write_text(FILE.format(coverage=1, v1=v1, v2=v2))
        wait_for(lambda: bool(client.recommend(user, 5).assignments), 5, "coverage back")
    time.sleep(0.1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys.cli", "experiments", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})


def test_the_cli_validates_lists_and_shows_status(experiment, tmp_path):
    cluster, path, v1, v2 = experiment
    good = tmp_path / "good.yaml"
    good.write_text(FILE.format(coverage=0.5, v1=v1, v2=v2))
    r = _cli("validate", str(good))
    assert r.returncode == 0 and "valid: 1 layers, 1 experiments (1 running)" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(FILE.format(coverage=2, v1=v1, v2=v2))
    r = _cli("validate", str(bad))
    assert r.returncode == 2 and f"{bad}:9: layers[0].experiments[0].coverage: must be in [0, 1]" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    r = _cli("list", str(good))
    assert r.returncode == 0 and "ranker" in r.stdout and f"→ {v2}" in r.stdout
    with RecommenderClient(cluster.target) as client:
        client.recommend("status-user", 5)
    metrics = f"http://127.0.0.1:{cluster.services['ranker_svc'].metrics_port}/metrics"
    r = _cli("status", str(good), "--metrics", metrics)
    assert r.returncode == 0 and "running" in r.stdout and "challenger" in r.stdout and "%" in r.stdout, r.stdout


def test_clicks_and_purchases_are_counted_per_arm_from_the_stream(experiment, small_dataset):
    """Feedback/Send naming the request ids of answers: the ranker's stream follower joins them to the
    exposures and the ranker exports per-arm clicks, conversions and stream impressions."""
    cluster, *_ = experiment
    port = cluster.services["ranker_svc"].metrics_port
    names = {"clicks": "recsys_experiment_clicks_total", "conversions": "recsys_experiment_conversions_total",
             "impressions": "recsys_experiment_stream_impressions_total"}

    def counted() -> dict[tuple[str, str], float]:
        metrics = scrape(port)
        out = {(kind, dict(labels)["arm"]): v for kind, name in names.items() for (n, labels), v in metrics.items()
               if n == name and dict(labels)["experiment"] == "ranker"}
        out[("mismatched", "")] = metrics.get(("recsys_experiment_outcomes_dropped_total",
                                               (("reason", "mismatched"),)), 0.0)
        return out

    before = counted()
    expected: dict[tuple[str, str], float] = {}
    events = []
    with RecommenderClient(cluster.target) as client:
        users = _users(small_dataset)
        wait_for(lambda: bool(client.recommend(users[0], 5).assignments), 10, "the experiment running")
        for n, user in enumerate(users[10:40]):
            resp = client.recommend(user, 5)
            [a] = resp.assignments
            items = [it.item_id for it in resp.items]
            expected[("impressions", a.arm)] = expected.get(("impressions", a.arm), 0) + len(items)
            events.append(interaction(user, items[0], "click", request_id=resp.request_id))
            expected[("clicks", a.arm)] = expected.get(("clicks", a.arm), 0) + 1
            if n % 3 == 0:
                events.append(interaction(user, items[1], "purchase", request_id=resp.request_id))
                expected[("conversions", a.arm)] = expected.get(("conversions", a.arm), 0) + 1
        assert {arm for _, arm in expected} == {"control", "challenger"}
        events.append(interaction("someone-else", items[0], "click", request_id=resp.request_id))  # not counted
        expected[("mismatched", "")] = 1
        forced = client.stub.Recommend(pb.RecommendRequest(user_id=users[0], k=5, force_arms={"ranker": "control"}),
                                       timeout=10)
        events.append(interaction(users[0], forced.items[0].item_id, "click", request_id=forced.request_id))
        assert client.send(events).accepted == len(events)

    def delta() -> dict[tuple[str, str], float]:
        now = counted()
        return {key: now.get(key, 0.0) - before.get(key, 0.0) for key in expected}

    wait_for(lambda: all(delta()[k] >= v for k, v in expected.items()), 15, "the per-arm outcomes in the metrics")
    time.sleep(1.0)  # two more sends of the child: nothing is counted twice
    got = delta()
    assert {k: v for k, v in got.items() if k[0] != "impressions"} == \
        {k: v for k, v in expected.items() if k[0] != "impressions"}
    assert all(got[k] >= v for k, v in expected.items() if k[0] == "impressions")  # exposures of earlier calls too


def test_a_shadow_answers_in_the_background_and_is_logged_never_returned(experiment, small_dataset):
    cluster, path, v1, v2 = experiment
    path.write_text(FILE.format(coverage=0, v1=v1, v2=v2)
                    + f"shadow:\n  - {{name: dark, model_version: {v2}, share: 1.0}}\n")
    user = _users(small_dataset)[2]

    def shadow_ok() -> float:
        return scrape(cluster.services["ranker_svc"].metrics_port).get(
            ("recsys_shadow_requests_total", (("outcome", "ok"), ("shadow", "dark"))), 0.0)

    try:
        with RecommenderClient(cluster.target) as client:
            before = shadow_ok()
            wait_for(lambda: (client.recommend(user, 5), shadow_ok() > before)[1], 10, "a shadow answer")
            resp = client.recommend(user, 5)
        assert resp.model_version == v1 and not resp.assignments  # the shadow never shows
        stream = open_stream(topic_url(f"file://{cluster.log_dir / 'events'}", EXPOSURE_TOPIC))

        def logged() -> list:
            return [x for x in (decode(e.data).exposure for e in stream.scan()) if x.request_id == resp.request_id]

        wait_for(lambda: len(logged()) == 2, 5, "the real and the shadow exposure")
        real, dark = sorted(logged(), key=lambda x: x.shadow)
        assert (real.shadow, real.model_version) == (False, v1)
        assert (dark.shadow, dark.model_version) == (True, v2)
        assert [(a.experiment, a.arm) for a in dark.assignments] == [("dark", "shadow")]
    finally:
        path.write_text(FILE.format(coverage=1, v1=v1, v2=v2))
