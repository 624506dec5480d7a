"""Kubernetes manifests: Helm lint/template under several value scenarios, kustomize overlays, strict
schema validation against Kubernetes 1.29 and 1.33, and the structural rules every manifest must follow."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from candidate_svc.settings import CandidateSettings
from feature_svc.settings import FeatureSettings
from ranker_svc.settings import RankerSettings

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import (  # noqa: E402
    CHART,
    K8S,
    MONITORING,
    RULES,
    Peer,
    allowed,
    deployment_of,
    env_of,
    helm,
    kustomize,
    labels_match,
    render_chart,
    run,
    tool,
    validate,
)

MODULES = {"ranker_svc": RankerSettings, "candidate_svc": CandidateSettings, "feature_svc": FeatureSettings}
COMPONENTS = ("ranker", "candidate", "feature")
GRPC_PORTS = {"ranker": 50051, "candidate": 50052, "feature": 50053}

_NO_AUTOSCALING = {"autoscaling": {"enabled": False, "minReplicas": 1, "maxReplicas": 1,
                                   "targetCPUUtilizationPercentage": 70},
                   "pdb": {"enabled": False, "maxUnavailable": 1}, "replicas": 1}
HELM_SCENARIOS = {
    "defaults": {},
    "prod": {
        "image": {"digest": "sha256:" + "a" * 64},
        "redis": {"existingSecret": "recsys-redis"},
        "stream": {"existingSecret": "recsys-stream"},
        "config": {"candidate_svc": {"index": "hnsw", "max_n": 2000}, "ranker_svc": {"dependency_timeout_ms": 250}},
        "ranker": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 30,
                                   "targetCPUUtilizationPercentage": 60}},
        "models": {"storage": "existingClaim", "existingClaim": "recsys-models-efs"},
        "networkPolicy": {"egress": {"redis": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "redis"}}}]}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                    "prometheusRule": {"enabled": True}, "rulesConfigMap": {"enabled": True, "namespace": "monitoring"},
                    "dashboard": {"enabled": True, "namespace": "monitoring"}},
        "retrain": {"dataset": "/data/current", "tune": {"trials": 20, "rayAddress": "ray://ray-head.ray:10001"},
                    "dataVolume": {"persistentVolumeClaim": {"claimName": "recsys-training-data", "readOnly": True}},
                    "trainConfig": "ranker:\n  num_boost_round: 300\n"},
    },
    "features-off": {
        "networkPolicy": {"enabled": False}, "metrics": {"podAnnotations": False}, "retrain": {"enabled": False},
        "tests": {"enabled": False}, "topologySpread": False, "auth": {"enabled": False},
        "ranker": _NO_AUTOSCALING, "candidate": _NO_AUTOSCALING, "feature": _NO_AUTOSCALING,
    },
    "redis-url-object-store": {
        "redis": {"url": "redis://redis.data.svc:6379/0"},
        "models": {"storage": "objectStore", "objectStore": {"remote": "s3:bucket/recsys/models",
                                                            "envFromSecret": "recsys-rclone"}},
        "networkPolicy": {"egress": {"enabled": False}},
    },
    "rayjob-pinned": {
        "retrain": {"mode": "rayjob", "dataset": "/data/current", "trainConfig": "seed: 7\n"},
        "models": {"pinnedBundle": "20250101-000000-abcdef"},
    },
}


@pytest.fixture(scope="module")
def helm_renders() -> dict[str, list[dict]]:
    return {name: render_chart(values) for name, values in HELM_SCENARIOS.items()}


def _rayjob_composition(tmp: Path) -> Path:
    """prod-like overlay + the retrain-rayjob component (as an operator would compose them)."""
    rel = os.path.relpath(K8S, tmp)
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "recsys",
        "resources": [f"{rel}/base"], "components": [f"{rel}/monitoring", f"{rel}/components/retrain-rayjob"]}))
    return tmp


@pytest.fixture(scope="module")
def kustomize_builds(tmp_path_factory) -> dict[str, list[dict]]:
    return {
        "overlays/dev": kustomize(K8S / "overlays" / "dev"),
        "overlays/prod": kustomize(K8S / "overlays" / "prod"),
        "base": kustomize(K8S / "base"),
        "base+monitoring+retrain-rayjob": kustomize(_rayjob_composition(tmp_path_factory.mktemp("kust"))),
    }


@pytest.fixture(scope="module")
def all_renders(helm_renders, kustomize_builds) -> dict[str, list[dict]]:
    return {**{f"helm:{k}": v for k, v in helm_renders.items()},
            **{f"kustomize:{k}": v for k, v in kustomize_builds.items()}}


# ---------------------------------------------------------------------------------------------- Helm


@pytest.mark.parametrize("scenario", sorted(HELM_SCENARIOS))
@pytest.mark.parametrize("kube_version", ["v1.29.0", "v1.33.0"])
def test_helm_lint_strict(scenario, kube_version):
    report = helm().lint(str(CHART), HELM_SCENARIOS[scenario], strict=True, kube_version=kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, f"helm lint --strict ({scenario}, {kube_version}): {problems}"


@pytest.mark.parametrize("bad, why", [
    ({"containerSecurityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                   "readOnlyRootFilesystem": False, "capabilities": {"drop": ["ALL"]},
                                   "seccompProfile": {"type": "RuntimeDefault"}}}, "writable root filesystem"),
    ({"config": {"candidate_svc": {"index": "annoy"}}}, "unknown FAISS index"),
    ({"config": {"ranker_svc": {"port": 6000}}}, "port is managed by the chart"),
    ({"config": {"ranker_svc": {"n_candiates": 10}}}, "misspelt setting"),
    ({"models": {"storage": "objectStore"}}, "object store without a remote"),
    ({"ranker": {"resources": {"requests": {"memory": None}}}}, "no memory request (null removes the default)"),
    ({"retrain": {"mode": "airflow"}}, "unknown retrain mode"),
    ({"image": {"digest": "latest"}}, "malformed digest"),
    ({"replicaCount": 3}, "unknown top-level key"),
])
def test_values_schema_rejects(bad, why):
    h = helm()
    with h.Chart.load(str(CHART)) as chart, pytest.raises(h.HelmError):
        chart.validate_schema(bad)
        chart.render(bad, name="recsys", namespace="recsys")  # rendering validates the schema too
    report = h.lint(str(CHART), bad, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), f"lint accepted: {why}"


def test_helm_scenarios_render_what_they_enable(helm_renders):
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in helm_renders.items()}
    assert kinds["defaults"].count("HorizontalPodAutoscaler") == 3
    assert kinds["defaults"].count("PodDisruptionBudget") == 3
    assert kinds["defaults"].count("NetworkPolicy") == 4
    assert "CronJob" in kinds["defaults"] and "ServiceMonitor" not in kinds["defaults"]
    off = kinds["features-off"]
    for absent in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor",
                   "PrometheusRule", "CronJob", "RayCronJob", "Pod"):
        assert absent not in off, f"features-off still renders a {absent}"
    assert sorted(set(off)) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"]
    for d in helm_renders["features-off"]:
        if d["kind"] == "Deployment":
            assert d["spec"]["replicas"] == 1
            assert "prometheus.io/scrape" not in d["spec"]["template"]["metadata"].get("annotations", {})
    for k in ("ServiceMonitor", "PrometheusRule"):
        assert k in kinds["prod"]
    assert "RayCronJob" in kinds["rayjob-pinned"] and "CronJob" not in kinds["rayjob-pinned"]
    assert "PersistentVolumeClaim" not in kinds["prod"], "existingClaim must not create a PVC"
    assert "PersistentVolumeClaim" not in kinds["redis-url-object-store"]


def test_redis_on_and_off(helm_renders):
    for scenario, secret in (("defaults", None), ("prod", "recsys-redis"), ("redis-url-object-store", "recsys-redis")):
        docs = helm_renders[scenario]
        feature = env_of(deployment_of(docs, "feature")["spec"]["template"]["spec"]["containers"][0])
        if secret is None:
            assert "RECSYS_STORAGE" not in feature
        else:
            ref = feature["RECSYS_STORAGE"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret and ref["key"] == "url"
        for other in ("ranker", "candidate"):
            other_container = deployment_of(docs, other)["spec"]["template"]["spec"]["containers"][0]
            assert "RECSYS_STORAGE" not in env_of(other_container)
    def secrets(docs):  # but the callers file's, the chart's own (tests/deploy/test_security_manifests.py)
        return [d for d in docs if d["kind"] == "Secret" and not d["metadata"]["name"].endswith("-callers")]

    assert secrets(helm_renders["redis-url-object-store"])[0]["stringData"]["url"] == "redis://redis.data.svc:6379/0"
    assert not secrets(helm_renders["prod"]), "existingSecret must not be re-created"


def test_registry_modes(helm_renders):
    env = env_of(deployment_of(helm_renders["defaults"], "ranker")["spec"]["template"]["spec"]["containers"][0])
    assert env["RECSYS_REGISTRY"]["value"] == "/models" and "RECSYS_BUNDLE" not in env
    pinned = env_of(deployment_of(helm_renders["rayjob-pinned"], "ranker")["spec"]["template"]["spec"]["containers"][0])
    assert pinned["RECSYS_BUNDLE"]["value"] == "/models/20250101-000000-abcdef" and "RECSYS_REGISTRY" not in pinned
    # Object store: a native sidecar syncs the registry; the service waits for the first CHAMPION.
    pod = deployment_of(helm_renders["redis-url-object-store"], "candidate")["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and "CHAMPION" in " ".join(sidecar["startupProbe"]["exec"]["command"])
    script = sidecar["command"][-1]
    assert script.index("--exclude CHAMPION") < script.index('copyto "$REMOTE/CHAMPION"'), "pointer must sync last"
    cron = next(d for d in helm_renders["redis-url-object-store"] if d["kind"] == "CronJob")
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert [c["name"] for c in job_pod["initContainers"]] == ["model-download", "retrain"]
    assert [c["name"] for c in job_pod["containers"]] == ["model-upload"]


# ---------------------------------------------------------------------------------------------- validation


def test_every_manifest_validates_against_kubernetes_1_29_and_1_33(all_renders):
    errors = [e for where, docs in all_renders.items() for e in validate(docs, where)]
    assert not errors, "\n".join(errors)


def test_kustomize_overlays_validate_with_the_cli(kustomize_builds, tmp_path):
    """The same check through the kubernetes-validate CLI, as an operator would run it."""
    cli = Path(sys.executable).with_name("kubernetes-validate")
    assert cli.exists(), "kubernetes-validate CLI missing: .venv/bin/pip install -e '.[dev]'"
    for overlay in ("dev", "prod"):
        out = tmp_path / f"{overlay}.yaml"
        out.write_text(yaml.safe_dump_all(kustomize_builds[f"overlays/{overlay}"]))
        for version in ("1.29", "1.33"):
            proc = run([str(cli), "--strict", "--quiet", "-k", version, str(out)])
            assert proc.returncode == 0, f"{overlay} @ {version}:\n{proc.stdout}{proc.stderr}"


def test_validation_catches_a_broken_manifest(helm_renders):
    """Guard against a validator that passes everything."""
    import copy

    dep = copy.deepcopy(deployment_of(helm_renders["defaults"], "ranker"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 1}
    assert validate([dep], "broken"), "a misspelt field passed strict validation"


# ---------------------------------------------------------------------------------------------- structure


def _pod_specs(doc: dict) -> list[tuple[str, dict]]:
    kind = doc["kind"]
    if kind == "Deployment":
        return [("pod", doc["spec"]["template"]["spec"])]
    if kind == "CronJob":
        return [("pod", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "Pod":
        return [("pod", doc["spec"])]
    if kind == "RayCronJob":
        return [("pod", doc["spec"]["jobTemplate"]["submitterPodTemplate"]["spec"])]
    return []


def test_pod_security_restricted_everywhere(all_renders):
    """Every pod (services, retraining, submitter, helm test) meets the restricted Pod Security Standard."""
    for where, docs in all_renders.items():
        for doc in docs:
            for _, pod in _pod_specs(doc):
                name = f"{where}: {doc['kind']}/{doc['metadata']['name']}"
                psc = pod.get("securityContext", {})
                assert psc.get("runAsNonRoot") is True, name
                assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
                assert pod.get("automountServiceAccountToken") is False, name
                assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
                for c in pod.get("initContainers", []) + pod["containers"]:
                    sc = c.get("securityContext", {})
                    cname = f"{name} container {c['name']}"
                    assert sc.get("runAsNonRoot") is True, cname
                    assert sc.get("allowPrivilegeEscalation") is False, cname
                    assert sc.get("readOnlyRootFilesystem") is True, cname
                    assert sc.get("capabilities", {}).get("drop") == ["ALL"], cname
                    assert not sc.get("capabilities", {}).get("add"), cname
                    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", cname
                    assert sc.get("privileged") in (None, False), cname
                    res = c.get("resources", {})
                    for part in ("requests", "limits"):
                        assert {"cpu", "memory"} <= set(res.get(part, {})), f"{cname}: {part}"
                    image = c["image"]
                    assert "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")), \
                        f"{cname}: image {image} is not pinned"
                for vol in pod.get("volumes", []):
                    assert set(vol) - {"name"} <= {"configMap", "emptyDir", "persistentVolumeClaim", "secret",
                                                   "projected", "downwardAPI", "ephemeral", "csi"}, f"{name}: {vol}"


def test_each_service_has_probes_service_pdb_hpa(all_renders):
    for where, docs in all_renders.items():
        by_kind: dict[str, list[dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        deployments = by_kind.get("Deployment", [])
        assert len(deployments) == 3, f"{where}: {len(deployments)} Deployments"
        for dep in deployments:
            name = f"{where}: {dep['metadata']['name']}"
            tpl = dep["spec"]["template"]
            labels = tpl["metadata"]["labels"]
            component = labels["app.kubernetes.io/component"]
            assert component in COMPONENTS, name
            assert labels_match(dep["spec"]["selector"], labels), f"{name}: selector does not match its pods"
            assert labels.get("recsys.io/job") == f"recsys-{component}", f"{name}: Prometheus job label"
            (c,) = tpl["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports["grpc"] == GRPC_PORTS[component], name
            assert "metrics" in ports, name
            # the gRPC port speaks TLS, which kubelet's gRPC probes cannot: they use the plaintext health port
            health = int(env_of(c)["RECSYS_HEALTH_PORT"]["value"])
            assert ports["health"] == health, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["grpc"]["port"] == health, f"{name}: {probe} must be gRPC on the health port"
            # readiness follows the overall health ("" = model loaded, not draining); startup and liveness
            # check the process-level `liveness` service, so a pod waiting for its first model is not killed
            assert "service" not in c["readinessProbe"]["grpc"], f"{name}: readiness must check service \"\""
            for probe in ("startupProbe", "livenessProbe"):
                assert c[probe]["grpc"].get("service") == "liveness", f"{name}: {probe} must check 'liveness'"
            assert c["command"][:2] == ["python", "-m"] and c["command"][2] == f"{component}_svc", name
            # A Service exposes the gRPC and metrics ports of exactly these pods; the ranker's dependencies
            # also have a headless one (checked in test_rollout_manifests.py).
            selecting = [s for s in by_kind["Service"] if labels_match({"matchLabels": s["spec"]["selector"]}, labels)]
            services = [s for s in selecting if s["spec"].get("clusterIP") != "None"]
            assert len(services) == 1, f"{name}: {len(services)} Services select it"
            assert len(selecting) - 1 == (component != "ranker"), f"{name}: {len(selecting) - 1} headless Services"
            sports = {p["name"]: p for p in services[0]["spec"]["ports"]}
            assert sports["grpc"]["port"] == ports["grpc"] and sports["grpc"]["targetPort"] == "grpc", name
            assert sports["metrics"]["targetPort"] == "metrics", name
            assert services[0]["metadata"]["labels"].get("recsys.io/job") == f"recsys-{component}", name
            hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", [])
                    if h["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]]
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if labels_match(p["spec"]["selector"], labels)]
            if where == "helm:features-off":
                assert not hpas and not pdbs and dep["spec"]["replicas"] >= 1, name
                continue
            assert len(hpas) == 1 and hpas[0]["spec"]["scaleTargetRef"]["kind"] == "Deployment", f"{name}: HPA"
            assert hpas[0]["spec"]["minReplicas"] <= hpas[0]["spec"]["maxReplicas"], name
            assert "replicas" not in dep["spec"], f"{name}: replicas fights the HPA"
            assert len(pdbs) == 1, f"{name}: {len(pdbs)} PodDisruptionBudgets"
            # The PDB must select only this component's pods.
            other = {**labels, "app.kubernetes.io/component": "other"}
            assert not labels_match(pdbs[0]["spec"]["selector"], other), f"{name}: PDB selector too wide"


def test_configuration_uses_real_settings(all_renders):
    """Every key of the service config file and every RECSYS_* variable is a setting of that service
    (the services reject unknown config keys at start-up), and the ranker points at the real headless Services."""
    for where, docs in all_renders.items():
        cms = [d for d in docs if d["kind"] == "ConfigMap" and "recsys.yaml" in d.get("data", {})]
        assert len(cms) == 1, f"{where}: {len(cms)} service config maps"
        config = yaml.safe_load(cms[0]["data"]["recsys.yaml"])
        assert set(config) <= set(MODULES), f"{where}: top-level keys apply to every service: {set(config)}"
        for section, values in config.items():
            fields = {f.name for f in dataclasses.fields(MODULES[section])}
            assert set(values) <= fields, f"{where}: unknown {section} settings {set(values) - fields}"
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        for key, component in (("feature_addr", "feature"), ("candidate_addr", "candidate")):
            target = config["ranker_svc"][key]
            assert target.startswith("dns:///"), f"{where}: {key} {target}: not resolved to every pod"
            host, port = target.removeprefix("dns:///").rsplit(":", 1)
            assert host in services, f"{where}: {key} {host} is not a Service"
            assert services[host]["spec"].get("clusterIP") == "None", f"{where}: {key} {host} is not headless"
            assert int(port) == GRPC_PORTS[component], f"{where}: {key} port"
            assert services[host]["spec"]["selector"]["app.kubernetes.io/component"] == component
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            c = dep["spec"]["template"]["spec"]["containers"][0]
            fields = {f.name for f in dataclasses.fields(MODULES[c["command"][2]])}
            for env in c.get("env", []):
                if env["name"].startswith("RECSYS_") and env["name"] != "RECSYS_CONFIG":
                    setting = env["name"].removeprefix("RECSYS_").lower()
                    assert setting in fields, f"{where}: {dep['metadata']['name']} sets unknown {env['name']}"
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            config_path = env_of(c)["RECSYS_CONFIG"]["value"]
            assert os.path.dirname(config_path) in mounts, f"{where}: config file not mounted"
            assert mounts["/models"].get("readOnly") is True, f"{where}: services must mount the registry read-only"
            assert "/tmp" in mounts, f"{where}: no writable /tmp with a read-only root filesystem"
            if c["command"][2] == "ranker_svc":
                assert "/etc/recsys/experiments" in mounts, f"{where}: experiments config not mounted in the ranker"


def test_retraining_job(all_renders):
    for where, docs in all_renders.items():
        crons = [d for d in docs if d["kind"] == "CronJob"]
        rays = [d for d in docs if d["kind"] == "RayCronJob"]
        if where == "helm:features-off":
            assert not crons and not rays
            continue
        assert len(crons) + len(rays) == 1, f"{where}: one retraining schedule"
        if rays:
            tpl = rays[0]["spec"]["jobTemplate"]
            assert tpl["clusterSelector"] and tpl["shutdownAfterJobFinishes"] is False, where
            env = yaml.safe_load(tpl["runtimeEnvYAML"])
            assert env["working_dir"] == "/etc/recsys/retrain" and env["env_vars"]["RECSYS_DATASET"], where
            assert tpl["entrypoint"] == "/bin/sh retrain.sh", where
            continue
        cron = crons[0]["spec"]
        assert cron["concurrencyPolicy"] == "Forbid", where
        job = cron["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never", where
        retrain = next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "retrain")
        assert retrain["command"] == ["/bin/sh", "/etc/recsys/retrain/retrain.sh"], where
        env = env_of(retrain)
        assert env["RECSYS_DATASET"]["value"] and env["RECSYS_REGISTRY"]["value"] == "/models", where
        mounts = {m["mountPath"]: m for m in retrain["volumeMounts"]}
        assert not mounts["/models"].get("readOnly"), f"{where}: the job writes the registry"
        script_cm = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "retrain-script")
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == script_cm)
        assert cm["data"]["retrain.sh"] == (K8S / "base" / "retrain" / "retrain.sh").read_text(), where


# ---------------------------------------------------------------------------------------------- network policy


@pytest.mark.parametrize("where", ["helm:defaults", "helm:prod", "kustomize:overlays/prod", "kustomize:overlays/dev"])
def test_network_policies(all_renders, where):
    docs = all_renders[where]
    ns = next((d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment"), None) or "recsys"
    policies = [{**d, "_ns": d["metadata"].get("namespace", ns)} for d in docs if d["kind"] == "NetworkPolicy"]
    pods = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]:
            Peer(ns, d["spec"]["template"]["metadata"]["labels"]) for d in docs if d["kind"] == "Deployment"}
    ranker, candidate, feature = pods["ranker"], pods["candidate"], pods["feature"]
    stranger = Peer(ns, {"app": "something-else"})
    client_ns_pod = Peer("shop", {"app": "web"}, {"recsys.io/recommend-client": "true"})
    other_ns_pod = Peer("shop", {"app": "web"})
    client_pod = Peer(ns, {"app": "batch", "recsys.io/recommend-client": "true"})
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    redis = Peer("redis", {"app": "redis"})

    def ingress(target, src, port, name):
        return allowed(policies, "in", target, src, port, name)

    for dep, port in ((feature, 50053), (candidate, 50052)):
        assert ingress(dep, ranker, port, "grpc"), f"{where}: ranker cannot call {port}"
        for src in (stranger, client_ns_pod, client_pod, prometheus):
            assert not ingress(dep, src, port, "grpc"), f"{where}: {src.pod_labels} may call port {port}"
    assert ingress(ranker, client_ns_pod, 50051, "grpc") and ingress(ranker, client_pod, 50051, "grpc"), where
    for src in (stranger, other_ns_pod, prometheus):
        assert not ingress(ranker, src, 50051, "grpc"), f"{where}: {src.pod_labels} may call Recommend"
    for target, port in ((ranker, 9101), (candidate, 9102), (feature, 9103)):
        assert ingress(target, prometheus, port, "metrics"), f"{where}: Prometheus cannot scrape {port}"
        assert not ingress(target, stranger, port, "metrics"), where
    # Egress: the ranker reaches its dependencies (and Redis) only; nobody else gets out.
    assert allowed(policies, "out", ranker, feature, 50053) and allowed(policies, "out", ranker, candidate, 50052)
    assert not allowed(policies, "out", ranker, Peer("internet", {}), 443), where
    # Redis (the event stream for all three, the feature store): see test_stream_manifests.py.
    assert allowed(policies, "out", feature, redis, 6379), where


# ---------------------------------------------------------------------------------------------- copies & overlays


def test_generated_copies_are_in_sync():
    proc = run([sys.executable, str(MONITORING / "sync.py"), "--check"])
    assert proc.returncode == 0, f"run `python k8s/monitoring/sync.py`:\n{proc.stdout}{proc.stderr}"
    assert (CHART / "files" / RULES.name).read_bytes() == RULES.read_bytes()


def test_prometheus_rule_objects_carry_the_rules(all_renders):
    rules = yaml.safe_load(RULES.read_text())
    for where in ("helm:prod", "kustomize:overlays/prod"):
        (pr,) = [d for d in all_renders[where] if d["kind"] == "PrometheusRule"]
        assert pr["spec"] == rules, f"{where}: PrometheusRule differs from {RULES.name}"
    cm = next(d for d in all_renders["helm:prod"] if d["metadata"]["name"].endswith("prometheus-rules"))
    assert yaml.safe_load(cm["data"]["recsys.rules.yaml"]) == rules
    dashboards = [d for d in all_renders["kustomize:overlays/prod"] if d["kind"] == "ConfigMap"
                  and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboards) == 1 and dashboards[0]["data"]["recsys-serving.json"] == \
        (MONITORING / "dashboards" / "recsys-serving.json").read_text()


def test_overlays_differ_as_documented(kustomize_builds):
    dev, prod = kustomize_builds["overlays/dev"], kustomize_builds["overlays/prod"]
    ns = {d["metadata"].get("namespace") for d in dev if d["kind"] != "Namespace"}
    assert ns == {"recsys-dev"}
    assert {d["metadata"].get("namespace") for d in prod if d["kind"] != "Namespace"} == {"recsys"}
    for docs in (dev, prod):
        (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not [d for d in dev if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert [d for d in prod if d["kind"] == "ServiceMonitor"]
    feature = env_of(deployment_of(prod, "feature")["spec"]["template"]["spec"]["containers"][0])
    assert feature["RECSYS_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "recsys-redis"
    dev_cron = next(d for d in dev if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert env_of(dev_cron["containers"][0])["RECSYS_DATASET"]["value"].startswith("synthetic")
    assert "training-data" not in {v["name"] for v in dev_cron["volumes"]}
    prod_cron = next(d for d in prod if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    prod_env = env_of(prod_cron["containers"][0])
    assert int(prod_env["RECSYS_TUNE_TRIALS"]["value"]) > 0 and prod_env["RAY_ADDRESS"]["value"].startswith("ray://")
    hpa = {d["metadata"]["name"]: d["spec"]["minReplicas"] for d in prod if d["kind"] == "HorizontalPodAutoscaler"}
    assert min(hpa.values()) >= 3, hpa


# ---------------------------------------------------------------------------------------------- retrain.sh


@pytest.fixture
def fake_recsys(tmp_path):
    """A `recsys` on PATH that logs its arguments; `recsys models promote` exits $PROMOTE_EXIT."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = bin_dir / "recsys"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                      'if [ "$1 $2" = "models promote" ]; then exit "${PROMOTE_EXIT:-0}"; fi\n'
                      'if [ "$1" = "tune" ]; then shift; while [ "$1" != "--out" ]; do shift; done; : > "$2"; fi\n')
    script.chmod(0o755)
    return bin_dir, log


def _retrain(bin_dir, **env):
    script = K8S / "base" / "retrain" / "retrain.sh"
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RECSYS_REGISTRY": "/models", **env}
    return subprocess.run(["/bin/sh", str(script)], env=full, capture_output=True, text=True, timeout=30)


def test_retrain_script_syntax():
    proc = run(["/bin/sh", "-n", str(K8S / "base" / "retrain" / "retrain.sh")])
    assert proc.returncode == 0, proc.stderr


def test_retrain_script_trains_then_gates(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_DATASET="synthetic")
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "train --dataset synthetic --registry /models"
    assert calls[1] == "models promote --registry /models --tolerance 0.005"


def test_retrain_script_tunes_on_ray_then_trains_with_the_result(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_DATASET="/data/x", RECSYS_TUNE_TRIALS="8", RAY_ADDRESS="ray://head:10001",
                    RECSYS_PROMOTE_TOLERANCE="0.01")
    assert proc.returncode == 0, proc.stderr
    tune, train, promote = log.read_text().splitlines()[:3]
    assert tune.startswith("tune --dataset /data/x --trials 8 --address ray://head:10001 --out ")
    config = tune.rsplit(" ", 1)[1]
    assert train == f"train --dataset /data/x --registry /models --config {config}"
    assert promote == "models promote --registry /models --tolerance 0.01"


def test_retrain_script_fails_when_the_gate_rejects(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir, RECSYS_DATASET="synthetic", PROMOTE_EXIT="3")
    assert proc.returncode != 0
    assert not any(c.startswith("models list") for c in log.read_text().splitlines())


def test_retrain_script_needs_a_dataset(fake_recsys):
    bin_dir, log = fake_recsys
    proc = _retrain(bin_dir)
    assert proc.returncode != 0 and "RECSYS_DATASET" in proc.stderr
    assert not log.exists()


def test_kubectl_is_available():
    tool("kubectl")
