"""Rolling restarts lose no call in Kubernetes as on loopback (tests/integration/test_rolling_restart.py):
the ranker dials its dependencies through headless Services (every ready pod, round_robin, client-side
health checking), those names are in the certificates and allowed by the NetworkPolicies, a new pod is
in DNS before the next old one drains (minReadySeconds), and the pod's grace period covers the preStop
sleep and the drain. Helm and kustomize agree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import K8S, Peer, allowed, helm, kustomize_renders, labels_match, render_chart, validate  # noqa: E402

DEPENDENCIES = {"feature": ("feature_addr", 50053), "candidate": ("candidate_addr", 50052)}
HELM = {
    "defaults": {},
    "prod": {"metrics": {"serviceMonitor": {"enabled": True}}, "terminationGracePeriodSeconds": 60,
             "config": {"ranker_svc": {"drain_grace_s": 40}}},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}, "fullnameOverride": "rs"},
    "long-name": {"fullnameOverride": "r" * 50},
    "istio": {"tls": {"enabled": False}, "mesh": {"istio": {"enabled": True}}},
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, list[dict]]:
    out = {f"helm:{name}": render_chart(values) for name, values in HELM.items()}
    return out | kustomize_renders(tmp_path_factory)


def _config(docs: list[dict]) -> dict:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "recsys.yaml" in d.get("data", {}))
    return yaml.safe_load(cm["data"]["recsys.yaml"])


def _deployments(docs: list[dict]) -> dict[str, dict]:
    return {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in docs if d["kind"] == "Deployment"}


def _dialled(docs: list[dict], component: str) -> tuple[dict, int]:
    """The Service the ranker dials for `component` and the port it dials."""
    key, _ = DEPENDENCIES[component]
    target = _config(docs)["ranker_svc"][key]
    assert target.startswith("dns:///"), f"{key} {target}: a ClusterIP balances connections, not calls"
    host, port = target.removeprefix("dns:///").rsplit(":", 1)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert host in services, f"{key}: {host} is not a Service"
    return services[host], int(port)


def test_the_ranker_dials_a_headless_service_of_exactly_its_dependencys_ready_pods(renders):
    for where, docs in renders.items():
        deps = _deployments(docs)
        monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
        for component, (_, grpc_port) in DEPENDENCIES.items():
            svc, port = _dialled(docs, component)
            name, spec = svc["metadata"]["name"], svc["spec"]
            assert len(name) <= 63, f"{where}: {name} is longer than a Service name may be"
            assert spec["clusterIP"] == "None" and spec.get("publishNotReadyAddresses") is False, f"{where}: {name}"
            assert port == grpc_port and [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [
                ("grpc", grpc_port, "grpc")], f"{where}: {name} must expose the gRPC port only"
            pod_labels = deps[component]["spec"]["template"]["metadata"]["labels"]
            assert labels_match({"matchLabels": spec["selector"]}, pod_labels), f"{where}: {name} misses the pods"
            for other, dep in deps.items():
                if other != component:
                    assert not labels_match({"matchLabels": spec["selector"]},
                                            dep["spec"]["template"]["metadata"]["labels"]), f"{where}: {name}"
            # The ClusterIP Service stays as it was (a cluster IP cannot change on upgrade).
            (cluster_ip,) = [d for d in docs if d["kind"] == "Service" and d is not svc
                             and d["spec"]["selector"] == spec["selector"]]
            assert cluster_ip["spec"]["type"] == "ClusterIP" and "clusterIP" not in cluster_ip["spec"], where
            # Scraped once, through the ClusterIP Service: no duplicate series.
            for monitor in monitors:
                assert not labels_match(monitor["spec"]["selector"], svc["metadata"].get("labels", {})), where


def test_the_renders_validate_strictly(renders):
    errors = [e for where, docs in renders.items() for e in validate(docs, where)]
    assert not errors, "\n".join(errors)


def test_network_policies_let_the_ranker_reach_the_pods_behind_the_headless_services(renders):
    for where in ("helm:defaults", "helm:prod", "kustomize:overlays/dev", "kustomize:overlays/prod"):
        docs = renders[where]
        ns = next((d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment"), None) or "recsys"
        policies = [{**d, "_ns": d["metadata"].get("namespace", ns)} for d in docs if d["kind"] == "NetworkPolicy"]
        pods = {c: Peer(ns, d["spec"]["template"]["metadata"]["labels"]) for c, d in _deployments(docs).items()}
        for component in DEPENDENCIES:
            _, port = _dialled(docs, component)  # a headless Service's clients connect to pod:port directly
            assert allowed(policies, "out", pods["ranker"], pods[component], port), f"{where}: {component}"
            assert allowed(policies, "in", pods[component], pods["ranker"], port, "grpc"), f"{where}: {component}"
            assert not allowed(policies, "in", pods[component], Peer(ns, {"app": "x"}), port, "grpc"), where


@pytest.mark.parametrize("where", ["kustomize:base+cert-manager", "helm:cert-manager"])
def test_the_certificates_name_the_headless_services_as_tls_checks_them(renders, where):
    """gRPC checks the server's certificate against the target's host (`dns:///host:port` -> host)."""
    docs = renders[where]
    certs = {d["spec"]["secretName"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
    for component in DEPENDENCIES:
        svc, _ = _dialled(docs, component)
        tls = next(v for v in _deployments(docs)[component]["spec"]["template"]["spec"]["volumes"]
                   if v["name"] == "tls")
        names = certs[tls["secret"]["secretName"]]["dnsNames"]
        host = svc["metadata"]["name"]
        for name in (host, f"{host}.recsys.svc", f"{host}.recsys.svc.cluster.local"):
            assert name in names, f"{where}: {component}'s certificate lacks {name}"


def test_rollouts_wait_for_new_pods_and_the_grace_period_covers_the_drain(renders):
    for where, docs in renders.items():
        config = _config(docs)
        for component, dep in _deployments(docs).items():
            spec = dep["spec"]
            assert spec["minReadySeconds"] >= 5, f"{where}: {component}"
            assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"{where}: {component}"
            pod = spec["template"]["spec"]
            (c,) = pod["containers"]
            sleep = c["lifecycle"]["preStop"]["exec"]["command"]
            assert sleep[0] == "sleep", f"{where}: {component}: preStop {sleep}"
            section = config[c["command"][2]]
            assert {"drain_delay_s", "drain_grace_s"} <= set(section), f"{where}: {component}: drain not explicit"
            need = float(sleep[1]) + section["drain_delay_s"] + section["drain_grace_s"]
            assert pod["terminationGracePeriodSeconds"] >= need, f"{where}: {component}: the kubelet kills the drain"


def test_helm_refuses_a_grace_period_shorter_than_the_drain():
    h = helm()
    for values in ({"terminationGracePeriodSeconds": 15},
                   {"config": {"candidate_svc": {"drain_delay_s": 5, "drain_grace_s": 25}}}):
        with h.Chart.load(str(K8S / "helm" / "recsys")) as chart, pytest.raises(h.HelmError) as err:
            chart.render(values, name="recsys", namespace="recsys")
        assert "terminationGracePeriodSeconds" in str(err.value) and "drain" in str(err.value), values
    render_chart({"config": {"feature_svc": {"drain_delay_s": 0, "drain_grace_s": 25}}})  # 5 + 0 + 25 <= 30


def test_helm_and_kustomize_agree(renders):
    """With release `recsys`, the chart's names are the base's: the same headless Services, addresses,
    rollout and drain settings."""
    helm_docs, base = renders["helm:defaults"], renders["kustomize:base"]

    def rollout(docs: list[dict]) -> dict:
        config = _config(docs)
        out: dict = {"addr": {k: config["ranker_svc"][k] for k in ("feature_addr", "candidate_addr")}}
        for component, dep in _deployments(docs).items():
            (c,) = dep["spec"]["template"]["spec"]["containers"]
            section = config[c["command"][2]]
            out[component] = (dep["spec"]["minReadySeconds"], dep["spec"]["strategy"],
                              dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                              c["lifecycle"], section["drain_delay_s"], section["drain_grace_s"])
        for component in DEPENDENCIES:
            svc, _ = _dialled(docs, component)
            out[svc["metadata"]["name"]] = {k: v for k, v in svc["spec"].items() if k != "selector"}
        return out

    assert rollout(helm_docs) == rollout(base)
