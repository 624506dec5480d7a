"""The event stream in the manifests (issue 9): RECSYS_STREAM from a Secret in every Deployment and in
the retraining job (kustomize and Helm), the ranker's gRPC port open to event producers, Redis egress for
the three services, the ranker's cache settings in the config map, and retrain.sh exporting the recorded
events before training on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import (  # noqa: E402
    CHART,
    K8S,
    Peer,
    allowed,
    env_of,
    helm,
    kustomize,
    render_chart,
    validate,
)

COMPONENTS = ("ranker", "candidate", "feature")
STREAM_URL = "redis://redis.data.svc:6379/0?key=recsys:events"
HELM_SCENARIOS = {
    # name: (values, the Secret and key every pod must read RECSYS_STREAM from)
    "defaults": ({}, ("recsys-stream", "url")),  # <fullname>-stream, created by the operator
    "existing-secret": ({"stream": {"existingSecret": "shared-stream", "existingSecretKey": "redis-url"}},
                        ("shared-stream", "redis-url")),
    "url": ({"fullnameOverride": "rs", "stream": {"url": STREAM_URL},
             "models": {"storage": "objectStore", "objectStore": {"remote": "s3:bucket/models"}}},
            ("rs-stream", "url")),
    "rayjob": ({"retrain": {"mode": "rayjob"}, "stream": {"existingSecret": "shared-stream"}},
               ("shared-stream", "url")),
    "redis-narrowed": ({"networkPolicy": {"egress": {"redis": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "redis"}}}]}}}, ("recsys-stream", "url")),
    "no-producers": ({"networkPolicy": {"feedbackProducers": []}}, ("recsys-stream", "url")),
}
KUSTOMIZE_SECRET = ("recsys-stream", "url")


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, tuple[list[dict], tuple[str, str]]]:
    out = {f"helm:{name}": (render_chart(values), secret) for name, (values, secret) in HELM_SCENARIOS.items()}
    comp = tmp_path_factory.mktemp("kust")
    rel = os.path.relpath(K8S, comp)
    (comp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "recsys",
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/retrain-rayjob"]}))
    for name, path in (("base", K8S / "base"), ("overlays/dev", K8S / "overlays" / "dev"),
                       ("overlays/prod", K8S / "overlays" / "prod"), ("base+retrain-rayjob", comp)):
        out[f"kustomize:{name}"] = (kustomize(path), KUSTOMIZE_SECRET)
    return out


def _pods(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] == "RayCronJob":
        return [doc["spec"]["jobTemplate"]["submitterPodTemplate"]["spec"]]
    return []


def _assert_stream_from_secret(container: dict, secret: tuple[str, str], where: str) -> None:
    entry = env_of(container).get("RECSYS_STREAM")
    assert entry, f"{where}: no RECSYS_STREAM"
    assert "value" not in entry, f"{where}: RECSYS_STREAM must come from a Secret, not a literal"
    ref = entry["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == secret, f"{where}: RECSYS_STREAM from {ref}, expected {secret}"
    assert not ref.get("optional"), f"{where}: an optional Secret would start pods without the shared stream"


# ---------------------------------------------------------------------------------------------- RECSYS_STREAM


def test_every_deployment_reads_the_stream_from_a_secret(renders):
    for where, (docs, secret) in renders.items():
        deployments = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
                       for d in docs if d["kind"] == "Deployment"}
        assert sorted(deployments) == sorted(COMPONENTS), where
        for component, dep in deployments.items():
            (container,) = dep["spec"]["template"]["spec"]["containers"]
            _assert_stream_from_secret(container, secret, f"{where}: {component}")


def test_the_cronjob_exports_the_same_stream(renders):
    for where, (docs, secret) in renders.items():
        for cron in (d for d in docs if d["kind"] == "CronJob"):
            pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            retrain = next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "retrain")
            _assert_stream_from_secret(retrain, secret, f"{where}: CronJob retrain")
            assert retrain["command"][-1].endswith("retrain.sh"), where


def test_the_stream_url_is_never_a_literal(renders):
    """The URL may hold a password: it is only ever in a Secret (Helm stream.url creates one)."""
    for where, (docs, _) in renders.items():
        for doc in docs:
            if doc["kind"] == "Secret":
                continue
            for pod in _pods(doc):
                for c in pod.get("initContainers", []) + pod["containers"]:
                    assert "value" not in env_of(c).get("RECSYS_STREAM", {}), f"{where}: {doc['kind']} {c['name']}"
            if doc["kind"] == "RayCronJob":  # runs with the Ray head's environment (docs/operations.md)
                env_vars = yaml.safe_load(doc["spec"]["jobTemplate"]["runtimeEnvYAML"])["env_vars"]
                assert "RECSYS_STREAM" not in env_vars, f"{where}: the stream URL in a RayCronJob object"
            assert STREAM_URL not in yaml.safe_dump(doc), f"{where}: {doc['kind']} carries the stream URL"


def test_helm_creates_the_stream_secret_only_from_stream_url(renders):
    for name in HELM_SCENARIOS:
        docs, (secret_name, key) = renders[f"helm:{name}"]
        secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret_name]
        if name == "url":
            assert len(secrets) == 1 and secrets[0]["stringData"] == {key: STREAM_URL}, name
        else:
            assert not secrets, f"{name}: an existing (operator-made) Secret must not be rendered"


def test_stream_scenarios_lint_and_validate(renders):
    errors = [e for where, (docs, _) in renders.items() if where.startswith("helm:") for e in validate(docs, where)]
    assert not errors, "\n".join(errors)
    for name, (values, _) in HELM_SCENARIOS.items():
        report = helm().lint(str(CHART), values, strict=True, kube_version="v1.33.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint --strict ({name}): {problems}"


@pytest.mark.parametrize("bad, why", [
    ({"stream": {"url": "file:///data/events"}}, "a file:// stream is local to one pod"),
    ({"stream": {"url": STREAM_URL, "existingSecret": "x"}}, "url and existingSecret are exclusive"),
    ({"stream": {"existingSecretKey": ""}}, "empty Secret key"),
    ({"config": {"ranker_svc": {"stream": STREAM_URL}}}, "the stream is set by the chart, from a Secret"),
    ({"config": {"ranker_svc": {"cache": "memcached://cache:11211"}}}, "unknown cache backend"),
    ({"config": {"ranker_svc": {"cache_ttl_s": 0}}}, "a zero cache TTL"),
    ({"config": {"ranker_svc": {"exposures": "yes"}}}, "exposures is a boolean"),
    ({"networkPolicy": {"feedbackProducers": [{"namespaceSelectr": {}}]}}, "misspelt peer"),
])
def test_values_schema_rejects(bad, why):
    h = helm()
    with h.Chart.load(str(CHART)) as chart, pytest.raises(h.HelmError):
        chart.validate_schema(bad)
        chart.render(bad, name="recsys", namespace="recsys")
        pytest.fail(f"the chart accepted {bad}: {why}")


def test_schema_config_keys_are_service_settings_with_their_ranges():
    """Helm accepts under config.<service> only settings of that service (a service stops on unknown
    keys), never `stream` (a Secret), and the issue-9 settings with the catalog's ranges."""
    import dataclasses

    from candidate_svc.settings import CandidateSettings
    from feature_svc.settings import FeatureSettings
    from ranker_svc.settings import RankerSettings
    from recsys.settings import RANGES

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    for section, cls in (("feature_svc", FeatureSettings), ("candidate_svc", CandidateSettings),
                         ("ranker_svc", RankerSettings)):
        props = schema[section]["properties"]
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(props) <= fields, f"{section}: not settings: {set(props) - fields}"
        assert "stream" not in props, f"{section}: the stream URL comes from a Secret"
        for key in {"consumer_batch", "consumer_interval_s", "max_history", "cache_ttl_s", "cache_max_new",
                    "cache_depth", "exposure_queue", "max_send_batch", "drain_delay_s", "drain_grace_s"} & set(props):
            assert (props[key]["minimum"], props[key]["maximum"]) == RANGES[key], f"{section}.{key}"


# ---------------------------------------------------------------------------------------------- config map


def test_ranker_cache_settings_in_the_config_map(renders):
    for where, (docs, _) in renders.items():
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "recsys.yaml" in d.get("data", {})]
        ranker = yaml.safe_load(cm["data"]["recsys.yaml"])["ranker_svc"]
        assert {"cache", "cache_ttl_s", "cache_max_new", "exposures"} <= set(ranker), f"{where}: {ranker}"
        assert ranker["cache"] == "none" or ranker["cache"].split("://")[0] in ("memory", "redis", "rediss"), where
        assert ranker["cache_ttl_s"] > 0 and ranker["cache_max_new"] >= 1 and ranker["exposures"] is True, where
        for section in ("feature_svc", "candidate_svc", "ranker_svc"):
            assert "stream" not in yaml.safe_load(cm["data"]["recsys.yaml"]).get(section, {}), \
                f"{where}: the stream URL belongs in the Secret"


# ---------------------------------------------------------------------------------------------- network policy


def _policies(docs):
    ns = next((d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment"), None) or "recsys"
    policies = [{**d, "_ns": d["metadata"].get("namespace", ns)} for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]:
            Peer(ns, d["spec"]["template"]["metadata"]["labels"]) for d in docs if d["kind"] == "Deployment"}
    return ns, policies, pods


NETWORK_RENDERS = ["helm:defaults", "helm:redis-narrowed", "kustomize:base", "kustomize:overlays/dev",
                   "kustomize:overlays/prod"]


@pytest.mark.parametrize("where", NETWORK_RENDERS + ["helm:no-producers"])
def test_event_producers_reach_the_ranker_grpc_port_only(renders, where):
    ns, policies, pods = _policies(renders[where][0])
    producer_ns_pod = Peer("shop", {"app": "events"}, {"recsys.io/feedback-producer": "true"})
    producer_pod = Peer(ns, {"app": "importer", "recsys.io/feedback-producer": "true"})
    labelled_elsewhere = Peer("shop", {"app": "events", "recsys.io/feedback-producer": "true"})
    client = Peer("web", {"app": "web"}, {"recsys.io/recommend-client": "true"})
    open_to_producers = where != "helm:no-producers"
    for src in (producer_ns_pod, producer_pod):
        assert allowed(policies, "in", pods["ranker"], src, 50051, "grpc") == open_to_producers, (where, src.pod_labels)
        assert not allowed(policies, "in", pods["ranker"], src, 9101, "metrics"), where
        for component, port in (("feature", 50053), ("candidate", 50052)):
            assert not allowed(policies, "in", pods[component], src, port, "grpc"), f"{where}: producer -> {component}"
    # A pod label counts in the recsys namespace only; elsewhere the namespace must carry the label.
    assert not allowed(policies, "in", pods["ranker"], labelled_elsewhere, 50051, "grpc"), where
    assert allowed(policies, "in", pods["ranker"], client, 50051, "grpc"), f"{where}: recommend clients still allowed"


@pytest.mark.parametrize("where", NETWORK_RENDERS)
def test_all_three_services_reach_redis(renders, where):
    _, policies, pods = _policies(renders[where][0])
    redis = Peer("redis", {"app": "redis"})
    elsewhere = Peer("cache", {"app": "redis"})
    for component in COMPONENTS:
        pod = pods[component]
        assert allowed(policies, "out", pod, redis, 6379), f"{where}: {component} cannot reach Redis"
        assert not allowed(policies, "out", pod, redis, 6380), f"{where}: {component} egress is not limited to 6379"
        assert not allowed(policies, "out", pod, Peer("internet", {}), 443), f"{where}: {component} reaches 443"
        if where == "helm:redis-narrowed":
            assert not allowed(policies, "out", pod, elsewhere, 6379), f"{where}: {component} Redis not narrowed"


# ---------------------------------------------------------------------------------------------- retrain.sh


@pytest.fixture
def fake_recsys(tmp_path):
    """A `recsys` on PATH that logs its arguments; `events export` creates --out (or exits $EXPORT_EXIT)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = bin_dir / "recsys"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                      'if [ "$1 $2" = "events export" ]; then\n'
                      '  [ -z "${EXPORT_EXIT:-}" ] || exit "$EXPORT_EXIT"\n'
                      '  while [ "$1" != "--out" ]; do shift; done; mkdir -p "$2"\n'
                      'fi\n'
                      'if [ "$1" = "tune" ]; then shift; while [ "$1" != "--out" ]; do shift; done; : > "$2"; fi\n')
    script.chmod(0o755)
    return bin_dir, log


def _retrain(bin_dir, **env):
    script = K8S / "base" / "retrain" / "retrain.sh"
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECSYS_REGISTRY": "/models", "RECSYS_DATASET": "/data/x", **env}
    return subprocess.run(["/bin/sh", str(script)], env=full, capture_output=True, text=True, timeout=30)


SECRET_URL = "redis://:s3cret@redis.data:6379/0?key=recsys:events"


def test_retrain_exports_the_events_then_trains_with_them(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_STREAM=SECRET_URL)
    assert proc.returncode == 0, proc.stderr
    export, train, promote = log.read_text().splitlines()[:3]
    assert export.startswith(f"events export --stream {SECRET_URL} --out ")
    events_dir = export.rsplit(" ", 1)[1]
    assert train == f"train --dataset /data/x --registry /models --events {events_dir}"
    assert promote.startswith("models promote --registry /models")
    assert "s3cret" not in proc.stdout + proc.stderr, "the stream URL (and its password) must not be logged"


def test_retrain_exports_before_tuning(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_STREAM=SECRET_URL, RECSYS_TUNE_TRIALS="4")
    assert proc.returncode == 0, proc.stderr
    export, tune, train = log.read_text().splitlines()[:3]
    assert export.startswith("events export ") and tune.startswith("tune --dataset /data/x --trials 4 ")
    events_dir, config = export.rsplit(" ", 1)[1], tune.rsplit(" ", 1)[1]
    assert train == f"train --dataset /data/x --registry /models --events {events_dir} --config {config}"


@pytest.mark.parametrize("stream", [None, ""])
def test_retrain_without_a_stream_skips_the_export_and_says_so(fake_recsys, stream):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, **({} if stream is None else {"RECSYS_STREAM": stream}))
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith("events ") for c in calls)
    assert calls[0] == "train --dataset /data/x --registry /models"
    assert "RECSYS_STREAM is not set" in proc.stdout


def test_retrain_fails_when_the_export_fails(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_STREAM=SECRET_URL, EXPORT_EXIT="4", RECSYS_TUNE_TRIALS="2")
    assert proc.returncode != 0
    assert [c.split(" ", 2)[:2] for c in log.read_text().splitlines()] == [["events", "export"]], \
        "nothing may be tuned or trained after a failed export"


def test_retrain_header_documents_the_stream():
    header = (K8S / "base" / "retrain" / "retrain.sh").read_text().split("set -eu")[0]
    assert "RECSYS_STREAM" in header and "skipped" in header
    assert "RECSYS_STREAM" in (K8S / "components" / "retrain-rayjob" / "raycronjob.yaml").read_text()
