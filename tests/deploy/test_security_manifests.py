"""Transport security and caller authorization in the manifests (issue 11, items 7 and 8): every service
serves TLS from its mounted Secret with mutual TLS between them, probes on the plaintext health-only port,
feature_svc and candidate_svc admitting only the ranker's certificate name, the ranker's callers file from
a Secret that the real parser accepts; the optional cert-manager Certificates issue exactly the Secrets
the services mount, for the names they are dialled by; the optional Istio alternative (PeerAuthentication
STRICT, an AuthorizationPolicy per service, plaintext pods under their own service accounts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from recsys.rpc.auth import served_methods
from recsys.rpc.callers import parse_callers
from recsys.v1 import feedback_pb2, recommender_pb2, versions_pb2  # noqa: F401  (their services' descriptors)

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import DOCS, K8S, Peer, allowed, env_of, helm, kustomize_renders, render_chart, validate  # noqa: E402

COMPONENTS = ("ranker", "candidate", "feature")
GRPC = {"ranker": 50051, "candidate": 50052, "feature": 50053}
KNOWN = served_methods(["recsys.v1.Recommender", "recsys.v1.Feedback", "recsys.v1.ModelVersions"])
DIGEST = "a" * 64
HELM = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}, "fullnameOverride": "rs"},
    "cluster-issuer": {"tls": {"certManager": {"enabled": True, "issuerRef": {
        "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}},
    "callers": {"auth": {"callers": [{"name": "shop", "token_sha256": DIGEST, "methods": ["Recommend"],
                                      "rate_limit": {"rps": 50, "burst": 100}},
                                     {"name": "qa", "identity": "qa.corp", "methods": ["*"],
                                      "privileges": ["pin_version", "explain"]}]}},
    "token-only": {"tls": {"rankerClientAuth": "none"}, "tests": {"tokenSecret": "recsys-test-token"},
                   "auth": {"existingSecret": "my-callers"}},
    "istio": {"tls": {"enabled": False}, "mesh": {"istio": {"enabled": True}}},
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, list[dict]]:
    out = {f"helm:{name}": render_chart(values) for name, values in HELM.items()}
    return out | kustomize_renders(tmp_path_factory)


def _mesh(where: str) -> bool:
    return where.endswith("istio")


def _deployments(docs: list[dict]) -> dict[str, dict]:
    return {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in docs if d["kind"] == "Deployment"}


def _container(dep: dict) -> dict:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def _mounted_secret(dep: dict, path: str) -> str:
    """The Secret whose volume is mounted at the directory holding `path`."""
    c = _container(dep)
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    return volume["secret"]["secretName"]


def _ranker_identity(docs: list[dict]) -> str:
    return env_of(_container(_deployments(docs)["feature"]))["RECSYS_TLS_PEERS"]["value"]


def test_every_service_serves_mutual_tls_from_its_secret(renders):
    for where, docs in renders.items():
        if _mesh(where):
            continue
        deps = _deployments(docs)
        assert sorted(deps) == sorted(COMPONENTS), where
        for component, dep in deps.items():
            env = env_of(_container(dep))
            assert "RECSYS_PLAINTEXT" not in env, f"{where}: {component} must not run plaintext"
            files = {k: env[k]["value"] for k in ("RECSYS_TLS_CERT", "RECSYS_TLS_KEY", "RECSYS_TLS_CA")}
            assert [Path(f).name for f in files.values()] == ["tls.crt", "tls.key", "ca.crt"], where  # cert-manager's
            secrets = {_mounted_secret(dep, f) for f in files.values()}
            assert len(secrets) == 1 and secrets.pop().endswith(f"{component}-tls"), f"{where}: {component}"
            if component != "ranker":
                assert env["RECSYS_TLS_PEERS"]["value"] == _ranker_identity(docs), f"{where}: {component}"
        ranker = env_of(_container(deps["ranker"]))
        want = "none" if where == "helm:token-only" else None
        assert ranker.get("RECSYS_TLS_CLIENT_AUTH", {}).get("value") == want, where


def test_the_rankers_callers_file_comes_from_a_secret_the_parser_accepts(renders):
    for where, docs in renders.items():
        env = env_of(_container(_deployments(docs)["ranker"]))
        path = env["RECSYS_CALLERS"]["value"]
        name = _mounted_secret(_deployments(docs)["ranker"], path)
        secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name]
        if where == "helm:token-only":  # auth.existingSecret: the operator's, never rendered
            assert name == "my-callers" and not secrets, where
            continue
        (secret,) = secrets
        if "stringData" in secret:
            text = secret["stringData"][Path(path).name]
        else:
            import base64
            text = base64.b64decode(secret["data"][Path(path).name]).decode()
        callers = parse_callers(text, f"{where}:{name}", KNOWN)
        names = {c.name for c in callers.callers}
        if where.startswith("helm:") and not _mesh(where):  # the helm test calls with the ranker's certificate
            assert callers.by_identity[_ranker_identity(docs)].name == "helm-test", where
            assert callers.by_identity[_ranker_identity(docs)].methods == {"/recsys.v1.Recommender/Recommend"}
        if where == "helm:callers":
            assert {"shop", "qa", "helm-test"} == names and callers.by_token[DIGEST].rate_limit.rps == 50
        if where.startswith("kustomize:"):
            assert not names, f"{where}: the base lists no caller (every call refused until an overlay does)"


def test_cert_manager_issues_what_the_services_mount_for_the_names_they_are_dialled_by(renders):
    for where in ("kustomize:base+cert-manager", "helm:cert-manager", "helm:cluster-issuer"):
        docs = renders[where]
        certs = {d["spec"]["secretName"]: d for d in docs if d["kind"] == "Certificate" and not d["spec"].get("isCA")}
        issuers = {d["metadata"]["name"] for d in docs if d["kind"] == "Issuer"}
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and "recsys.yaml" in d.get("data", {}))
        ranker_cfg = yaml.safe_load(cm["data"]["recsys.yaml"])["ranker_svc"]
        dialled = {"feature": ranker_cfg["feature_addr"], "candidate": ranker_cfg["candidate_addr"]}
        for component, dep in _deployments(docs).items():
            secret = _mounted_secret(dep, env_of(_container(dep))["RECSYS_TLS_CERT"]["value"])
            cert = certs[secret]["spec"]
            assert {"server auth", "client auth"} <= set(cert["usages"]), f"{where}: {component}"
            if component == "ranker":
                assert cert["commonName"] == _ranker_identity(docs), f"{where}: the peers name the ranker's CN"
            else:
                host = dialled[component].rsplit(":", 1)[0].removeprefix("dns:///")
                assert host in cert["dnsNames"], f"{where}: {component} is dialled as {host}"
            ref = cert["issuerRef"]
            if where == "helm:cluster-issuer":
                assert (ref["kind"], ref["name"]) == ("ClusterIssuer", "corp-ca"), where
            else:
                assert ref["kind"] == "Issuer" and ref["name"] in issuers, f"{where}: issuer {ref} not rendered"
        if where.startswith("helm:"):
            test_pod = next(d for d in docs if d["kind"] == "Pod")
            target = test_pod["spec"]["containers"][0]["command"]
            host = target[target.index("--target") + 1].rsplit(":", 1)[0]
            ranker_secret = _mounted_secret(_deployments(docs)["ranker"], "/etc/recsys/tls/tls.crt")
            assert host in certs[ranker_secret]["spec"]["dnsNames"], where
            assert test_pod["spec"]["volumes"][-1]["secret"]["secretName"] == ranker_secret, where


def test_the_istio_alternative(renders):
    for where in ("kustomize:base+istio", "helm:istio"):
        docs = renders[where]
        ns = "recsys"
        deps = _deployments(docs)
        accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
        (peer_auth,) = [d for d in docs if d["kind"] == "PeerAuthentication"]
        assert peer_auth["spec"]["mtls"]["mode"] == "STRICT", where
        policies = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]: d["spec"]
                    for d in docs if d["kind"] == "AuthorizationPolicy"}
        assert sorted(policies) == sorted(COMPONENTS), where
        sa = {c: d["spec"]["template"]["spec"]["serviceAccountName"] for c, d in deps.items()}
        assert len(set(sa.values())) == 3 and set(sa.values()) <= accounts, f"{where}: one account each"
        ranker_principal = f"cluster.local/ns/{ns}/sa/{sa['ranker']}"
        for component, dep in deps.items():
            labels = dep["spec"]["template"]["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in peer_auth["spec"]["selector"]["matchLabels"].items()), where
            env = env_of(_container(dep))
            assert env["RECSYS_PLAINTEXT"]["value"] == "true", f"{where}: {component}: the sidecar does TLS"
            assert not {"RECSYS_TLS_CERT", "RECSYS_TLS_KEY", "RECSYS_TLS_CA", "RECSYS_TLS_PEERS"} & set(env), where
            assert not [v for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v
                        and v["secret"]["secretName"].endswith("-tls")], f"{where}: {component} mounts a TLS Secret"
            rules = policies[component]["rules"]
            grpc_rules = [r for r in rules if str(GRPC[component]) in r["to"][0]["operation"].get("ports", [])]
            if component == "ranker":
                paths = {p for r in grpc_rules for p in r["to"][0]["operation"].get("paths", [])}
                needed = {"/recsys.v1.Recommender/Recommend", "/recsys.v1.Users/Forget", "/grpc.health.v1.Health/*"}
                assert needed <= paths, where
                assert all("paths" in r["to"][0]["operation"] for r in grpc_rules), f"{where}: per method only"
            else:
                assert [r["from"][0]["source"]["principals"] for r in grpc_rules] == [[ranker_principal]], \
                    f"{where}: {component} admits only the ranker"
        # The sidecars reach istiod through the egress policies.
        nps = [{**d, "_ns": ns} for d in docs if d["kind"] == "NetworkPolicy"]
        istiod = Peer("istio-system", {"app": "istiod"})
        for component, dep in deps.items():
            pod = Peer(ns, dep["spec"]["template"]["metadata"]["labels"])
            assert allowed(nps, "out", pod, istiod, 15012), f"{where}: {component} cannot reach istiod"


def test_security_renders_validate(renders):
    errors = [e for where, docs in renders.items() for e in validate(docs, where)]
    assert not errors, "\n".join(errors)
    for name, values in HELM.items():
        report = helm().lint(str(CHART_PATH), values, strict=True, kube_version="v1.33.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint --strict ({name}): {problems}"


CHART_PATH = K8S / "helm" / "recsys"


@pytest.mark.parametrize("bad, why", [
    ({"tls": {"rankerClientAuth": "optional"}}, "gRPC Python cannot verify a certificate only when presented"),
    ({"tls": {"secretNames": {"ranker": "Bad_Name"}}}, "not a Secret name"),
    ({"tls": {"certManager": {"issuerRef": {"name": "x", "kind": "Vault", "group": "cert-manager.io"}}}},
     "unknown issuer kind"),
    ({"auth": {"callers": [{"name": "a", "token_sha256": "my-token", "methods": ["Recommend"]}]}},
     "a token instead of its digest"),
    ({"auth": {"callers": [{"name": "a", "methods": ["Recommend"]}]}}, "no token and no identity"),
    ({"auth": {"callers": [{"name": "a", "identity": "x", "methods": ["Recommend"], "privileges": ["root"]}]}},
     "unknown privilege"),
    ({"mesh": {"istio": {"enabled": True}}}, "the mesh with the services' own TLS still on"),
])
def test_bad_security_values_are_refused(bad, why):
    h = helm()
    with h.Chart.load(str(CHART_PATH)) as chart, pytest.raises(h.HelmError):
        chart.validate_schema(bad)
        chart.render(bad, name="recsys", namespace="recsys")
        pytest.fail(f"the chart accepted {bad}: {why}")


def test_the_docs_describe_the_security_setup():
    text = DOCS.read_text()
    section = text[text.index("## Security"):]
    for needle in ("recsys-ranker-tls", "recsys-callers", "components/cert-manager", "components/istio",
                   "PeerAuthentication", "AuthorizationPolicy", "token_sha256", "health_port", "plaintext"):
        assert needle in section, f"docs/operations.md, Security: {needle} is not described"
