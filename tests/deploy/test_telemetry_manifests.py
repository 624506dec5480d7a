"""Logs and tracing in the manifests (issue 11, item 9): every service gets RECSYS_LOG_FORMAT=json and
the standard OTEL_* variables, tracing off by default and on (sampled, the ratio configurable) with the
Helm value or the kustomize component, which also opens egress to the collector and nothing more.
The values the manifests set are the ones the services accept (recsys/rpc/tracing.py parses them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from recsys.rpc.tracing import exporter_names, sampler_from_env

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import CHART, K8S, Peer, allowed, env_of, helm, kustomize, render_chart, validate  # noqa: E402

COMPONENTS = ("ranker", "candidate", "feature")
TRACING_ON = {"tracing": {"enabled": True, "samplerArg": 0.2,
                          "extraEnv": [{"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "x-tenant=shop"}]}}


def _with_tracing_component(tmp: Path) -> Path:
    rel = os.path.relpath(K8S, tmp)
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "recsys",
        "resources": [f"{rel}/base"], "components": [f"{rel}/components/tracing"]}))
    return tmp


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, list[dict]]:
    return {"helm:defaults": render_chart(), "helm:tracing": render_chart(TRACING_ON),
            "kustomize:base": kustomize(K8S / "base"),
            "kustomize:base+tracing": kustomize(_with_tracing_component(tmp_path_factory.mktemp("kust")))}


def service_env(docs: list[dict]) -> dict[str, dict[str, str]]:
    """Each service's effective environment: its ConfigMap envFrom entries, then its env (which wins)."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    out = {}
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
            env.update(maps[source["configMapRef"]["name"]])
        env.update({k: v["value"] for k, v in env_of(c).items() if "value" in v})
        out[c["command"][2]] = env
    assert set(out) == {"ranker_svc", "candidate_svc", "feature_svc"}
    return out


@pytest.mark.parametrize("where", ["helm:defaults", "kustomize:base"])
def test_json_logs_and_tracing_off_by_default(renders, where):
    for service, env in service_env(renders[where]).items():
        assert env["RECSYS_LOG_FORMAT"] == "json", f"{where}: {service}"
        assert env["OTEL_SERVICE_NAME"].endswith(service.removesuffix("_svc")), f"{where}: {service}"
        assert exporter_names(env) == [], f"{where}: {service} traces by default"


@pytest.mark.parametrize(("where", "ratio"), [("helm:tracing", 0.2), ("kustomize:base+tracing", 0.05)])
def test_tracing_on_is_sampled_and_exports_over_otlp(renders, where, ratio):
    for service, env in service_env(renders[where]).items():
        assert exporter_names(env) == ["otlp"], f"{where}: {service}"
        sampler = sampler_from_env(env).get_description()  # what the service will build, or an error
        assert sampler.startswith("ParentBased") and f"TraceIdRatioBased{{{ratio}}}" in sampler, sampler
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector.observability")
        assert env["OTEL_PROPAGATORS"] == "tracecontext,baggage"
        if where.startswith("helm"):
            assert env["OTEL_EXPORTER_OTLP_HEADERS"] == "x-tenant=shop"


def test_the_manifests_validate(renders):
    errors = [e for where, docs in renders.items() for e in validate(docs, where)]
    assert not errors, "\n".join(errors[:20])


@pytest.mark.parametrize(("off", "on"), [("helm:defaults", "helm:tracing"),
                                         ("kustomize:base", "kustomize:base+tracing")])
def test_egress_to_the_collector_only_when_tracing_is_on(renders, off, on):
    collector = Peer("observability", {"app.kubernetes.io/name": "opentelemetry-collector"})
    elsewhere = Peer("shop", {"app": "web"})
    for where, expected in ((off, False), (on, True)):
        docs = renders[where]
        ns = next((d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment"), None) or "recsys"
        policies = [{**d, "_ns": d["metadata"].get("namespace", ns)} for d in docs if d["kind"] == "NetworkPolicy"]
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            pod = Peer(ns, dep["spec"]["template"]["metadata"]["labels"])
            assert allowed(policies, "out", pod, collector, 4317) is expected, f"{where}: {dep['metadata']['name']}"
            assert not allowed(policies, "out", pod, elsewhere, 4317), f"{where}: egress on 4317 to anyone"


@pytest.mark.parametrize("bad", [{"tracing": {"samplerArg": 5}}, {"tracing": {"sampler": "sometimes"}},
                                 {"tracing": {"endpoint": "otel-collector:4317"}}, {"logFormat": "xml"},
                                 {"tracing": {"extraEnv": [{"name": "RECSYS_PORT", "value": "1"}]}}])
def test_values_schema_rejects_bad_tracing_values(bad):
    h = helm()
    with h.Chart.load(str(CHART)) as chart, pytest.raises(h.HelmError, match="tracing|logFormat"):
        chart.validate_schema(bad)
