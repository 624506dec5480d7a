"""Shared helpers of the deployment tests: tools, Helm rendering, kustomize builds, schema validation.

No cluster is involved: manifests are rendered offline (Helm through helm-python-sdk, kustomize through
`kubectl kustomize`) and validated against the Kubernetes 1.29 and 1.33 OpenAPI schemas bundled in
kubernetes-validate. A missing tool FAILS the test with the command that installs it (CI installs all).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CHART = K8S / "helm" / "recsys"
MONITORING = K8S / "monitoring"
RULES = MONITORING / "rules" / "recsys.rules.yaml"
RULES_TESTS = MONITORING / "rules" / "recsys.rules.test.yaml"
DASHBOARD = MONITORING / "dashboards" / "recsys-serving.json"
DOCS = ROOT / "docs" / "operations.md"
KUBE_VERSIONS = ("1.29", "1.33")

INSTALL_HINTS = {
    "kubectl": "install kubectl (it bundles kustomize), e.g. from the Kubernetes apt repository",
    "promtool": "apt-get install prometheus   (.ci/run and `make sysdeps` do this)",
    "amtool": "apt-get install prometheus-alertmanager   (.ci/run and `make sysdeps` do this)",
}


def tool(name: str) -> str:
    """Path of a CLI tool; fails (never skips) with the way to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: {INSTALL_HINTS.get(name, 'install it')}", pytrace=False)
    return path


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def helm():
    try:
        import helm_python
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail("helm-python-sdk is not installed: .venv/bin/pip install -e '.[dev]'", pytrace=False)
    return helm_python


def kubernetes_validate():
    try:
        import kubernetes_validate as kv
    except ImportError:  # pragma: no cover
        pytest.fail("kubernetes-validate is not installed: .venv/bin/pip install -e '.[dev]'", pytrace=False)
    return kv


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def render_chart(values: dict | None = None, release: str = "recsys", namespace: str = "recsys") -> list[dict]:
    """`helm template`: every object the chart renders with `values` (NOTES.txt excluded)."""
    h = helm()
    with h.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name=release, namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(load_docs(text))
    return docs


def kustomize(path: Path) -> list[dict]:
    proc = run([tool("kubectl"), "kustomize", str(path)])
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return load_docs(proc.stdout)


def compose(tmp: Path, components: list[str]) -> Path:
    """A kustomization in `tmp`: the base plus these components (paths under k8s/)."""
    rel = os.path.relpath(K8S, tmp)
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "recsys",
        "resources": [f"{rel}/base"], "components": [f"{rel}/{c}" for c in components]}))
    return tmp


def kustomize_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """The base, both overlays, and the base with the cert-manager or the istio component, built."""
    paths = {"base": K8S / "base", "overlays/dev": K8S / "overlays" / "dev", "overlays/prod": K8S / "overlays" / "prod",
             "base+cert-manager": compose(tmp_path_factory.mktemp("cm"), ["components/cert-manager"]),
             "base+istio": compose(tmp_path_factory.mktemp("istio"), ["components/istio"])}
    return {f"kustomize:{name}": kustomize(path) for name, path in paths.items()}


# Custom resources: kubernetes-validate bundles only the core API schemas. These are checked against
# the hand-written schemas below (the fields this project uses, unknown fields rejected).
def _obj(props: dict, required: Iterable[str] = (), extra: bool = False) -> dict:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": extra}


_META = _obj({"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
              "namespace": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"}},
             ["name"])
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RULE = _obj({"alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": "string", "minLength": 1},
              "for": {"type": "string"}, "labels": _STR_MAP, "annotations": _STR_MAP}, ["expr"])
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({
            "jobLabel": {"type": "string"},
            "selector": _obj({"matchLabels": _STR_MAP, "matchExpressions": {"type": "array"}}),
            "namespaceSelector": {"type": "object"},
            "endpoints": {"type": "array", "minItems": 1, "items": _obj({
                "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                "interval": {"type": "string"}, "scrapeTimeout": {"type": "string"},
                "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}}, ["port"])}},
            ["selector", "endpoints"])}, ["apiVersion", "kind", "metadata", "spec"]),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({"groups": {"type": "array", "minItems": 1, "items": _obj({
            "name": {"type": "string"}, "interval": {"type": "string"},
            "rules": {"type": "array", "minItems": 1, "items": _RULE}}, ["name", "rules"])}}, ["groups"])},
        ["apiVersion", "kind", "metadata", "spec"]),
    ("ray.io/v1", "RayCronJob"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({
            "schedule": {"type": "string", "minLength": 9},
            "jobTemplate": _obj({
                "clusterSelector": {**_STR_MAP, "minProperties": 1},
                "shutdownAfterJobFinishes": {"const": False},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode"]},
                "backoffLimit": {"type": "integer"}, "activeDeadlineSeconds": {"type": "integer"},
                "submitterConfig": _obj({"backoffLimit": {"type": "integer"}}),
                "entrypoint": {"type": "string", "minLength": 1},
                "runtimeEnvYAML": {"type": "string"},
                "submitterPodTemplate": {"type": "object"}},
                ["clusterSelector", "entrypoint"])},
            ["schedule", "jobTemplate"])}, ["apiVersion", "kind", "metadata", "spec"]),
}
# Security custom resources (docs/operations.md, "Security"): cert-manager and Istio, the fields used here.
_ISSUER_REF = _obj({"name": {"type": "string", "minLength": 1}, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                    "group": {"const": "cert-manager.io"}}, ["name"])
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"}
_PRINCIPALS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
_SELECTOR = _obj({"matchLabels": {**_STR_MAP, "minProperties": 1}}, ["matchLabels"])
CRD_SCHEMAS.update({
    ("cert-manager.io/v1", "Certificate"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({
            "secretName": {"type": "string", "minLength": 1}, "isCA": {"type": "boolean"},
            "commonName": {"type": "string", "minLength": 1, "maxLength": 64},
            "dnsNames": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "usages": {"type": "array", "items": {"enum": ["server auth", "client auth", "digital signature",
                                                            "key encipherment", "cert sign"]}},
            "duration": _DURATION, "renewBefore": _DURATION,
            "privateKey": _obj({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                                "rotationPolicy": {"enum": ["Never", "Always"]}}),
            "issuerRef": _ISSUER_REF}, ["secretName", "issuerRef"])}, ["apiVersion", "kind", "metadata", "spec"]),
    ("cert-manager.io/v1", "Issuer"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": {"oneOf": [_obj({"selfSigned": _obj({})}, ["selfSigned"]),
                           _obj({"ca": _obj({"secretName": {"type": "string", "minLength": 1}}, ["secretName"])},
                                ["ca"])]}}, ["apiVersion", "kind", "metadata", "spec"]),
    ("security.istio.io/v1", "PeerAuthentication"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({
            "selector": _SELECTOR, "mtls": _obj({"mode": {"enum": ["STRICT", "PERMISSIVE", "DISABLE"]}}, ["mode"]),
            "portLevelMtls": {"type": "object", "propertyNames": {"pattern": "^[0-9]+$"},
                              "additionalProperties": _obj({"mode": {"enum": ["STRICT", "PERMISSIVE", "DISABLE"]}},
                                                           ["mode"])}}, ["mtls"])},
        ["apiVersion", "kind", "metadata", "spec"]),
    ("security.istio.io/v1", "AuthorizationPolicy"): _obj({
        "apiVersion": {}, "kind": {}, "metadata": _META,
        "spec": _obj({
            "selector": _SELECTOR, "action": {"enum": ["ALLOW", "DENY"]},
            "rules": {"type": "array", "minItems": 1, "items": _obj({
                "from": {"type": "array", "items": _obj({"source": _obj({
                    "principals": _PRINCIPALS, "namespaces": _PRINCIPALS})}, ["source"])},
                "to": {"type": "array", "items": _obj({"operation": _obj({
                    "ports": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[0-9]+$"}},
                    "paths": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^/"}}})},
                    ["operation"])}})}}, ["selector", "action", "rules"])},
        ["apiVersion", "kind", "metadata", "spec"]),
})


_VALIDATED: dict[str, list[str]] = {}


def validate(docs: list[dict], where: str) -> list[str]:
    """Validate every object strictly against Kubernetes 1.29 and 1.33; custom resources against
    CRD_SCHEMAS (their pod templates against core/v1 PodTemplateSpec). Returns the errors."""
    import json

    errors = []
    for doc in docs:
        key = json.dumps(doc, sort_keys=True)
        if key not in _VALIDATED:  # the same object rendered by several scenarios is checked once
            _VALIDATED[key] = _validate_one(doc)
        errors.extend(f"{where}: {e}" for e in _VALIDATED[key])
    return errors


def _validate_one(doc: dict) -> list[str]:
    import jsonschema

    kv = kubernetes_validate()
    errors = []
    ident = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        try:
            jsonschema.validate(doc, CRD_SCHEMAS[key])
        except jsonschema.ValidationError as exc:
            errors.append(f"{ident}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}")
        template = doc.get("spec", {}).get("jobTemplate", {}).get("submitterPodTemplate")
        if template:  # validated as a real PodTemplate object
            docs_tpl = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            errors.extend(f"{ident} submitterPodTemplate: {e}" for e in _validate_one(docs_tpl))
        return errors
    for version in KUBE_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.utils.SchemaNotFoundError:
            errors.append(f"{ident}: no schema for {key} in Kubernetes {version} and no CRD schema here")
        except kv.utils.ValidationError as exc:
            errors.append(f"{ident} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
    return errors


# Rendered objects: lookups shared by the manifest tests.
def env_of(container: dict) -> dict[str, dict]:
    """A container's env entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def deployment_of(docs: list[dict], component: str) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(f"-{component}"))


def labels_match(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


# NetworkPolicy evaluation (what a CNI would allow), for the connectivity assertions.
class Peer:
    def __init__(self, namespace: str, pod_labels: dict, ns_labels: dict | None = None):
        self.namespace = namespace
        self.pod_labels = pod_labels
        self.ns_labels = {"kubernetes.io/metadata.name": namespace, **(ns_labels or {})}


def _peer_matches(peer: dict, who: Peer, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"], who.ns_labels):
            return False
    elif who.namespace != policy_ns:
        return False
    return "podSelector" not in peer or labels_match(peer["podSelector"], who.pod_labels)


def _port_matches(ports: list | None, number: int, name: str | None) -> bool:
    return not ports or any(p.get("port") in (number, name) for p in ports)


def allowed(policies, direction, target: Peer, other: Peer, number: int, name: str | None = None) -> bool:
    """Is traffic between `target` (the selected pod) and `other` allowed in `direction` ("in"/"out")?
    `policies` are NetworkPolicy objects with their namespace in "_ns"."""
    kind, field, key = ("Ingress", "ingress", "from") if direction == "in" else ("Egress", "egress", "to")
    selecting = [p for p in policies if p["_ns"] == target.namespace and kind in p["spec"]["policyTypes"]
                 and labels_match(p["spec"]["podSelector"], target.pod_labels)]
    if not selecting:
        return True
    return any((key not in rule or any(_peer_matches(peer, other, p["_ns"]) for peer in rule[key]))
               and _port_matches(rule.get("ports"), number, name)
               for p in selecting for rule in p["spec"].get(field, []))
