"""A real cluster on mutual TLS with caller authorization (recsys/rpc/auth.py): per-service certificates
from a throwaway CA, feature_svc and candidate_svc accepting only the ranker's certificate (tls_peers),
the ranker checking every call against a callers file (bearer tokens by digest, certificate names,
methods, privileges, a rate limit). Also: the callers file and the ranker's certificate change live."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.client import RecommenderClient, interaction
from recsys.cluster import start_cluster, tls_credentials
from recsys.rpc.devcerts import LocalCA
from recsys.rpc.tls import ClientTLS, TLSFiles
from recsys.scrape import scrape
from recsys.v1 import features_pb2, features_pb2_grpc

pytestmark = pytest.mark.integration

TOKENS = {"shop": "shop-" + "1" * 40, "qa": "qa-" + "2" * 40, "limited": "limited-" + "3" * 40,
          "late": "late-" + "4" * 40}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def callers_file(extra: list[dict] | None = None) -> str:
    callers = [
        {"name": "shop", "token_sha256": _digest(TOKENS["shop"]), "methods": ["Recommend"]},
        {"name": "qa", "token_sha256": _digest(TOKENS["qa"]), "methods": ["*"],
         "privileges": ["pin_version", "force_arms", "explain"]},
        {"name": "limited", "token_sha256": _digest(TOKENS["limited"]), "methods": ["Recommend"],
         "rate_limit": {"rps": 0.2, "burst": 2}},
        {"name": "app", "identity": "app.example", "methods": ["Recommend", "Feedback"]},
    ]
    return yaml.safe_dump({"callers": callers + (extra or [])})


@pytest.fixture(scope="module")
def secure(small_bundle, tmp_path_factory):
    """(cluster, CA, its directory, the callers file): mutual TLS everywhere, callers checked."""
    pki = tmp_path_factory.mktemp("pki")
    ca = LocalCA(pki)
    tls = {name: ca.issue(name.removesuffix("_svc")) for name in ("feature_svc", "candidate_svc", "ranker_svc")}
    path = tmp_path_factory.mktemp("callers") / "callers.yaml"
    path.write_text(callers_file())
    peers = ["--tls-peers", "ranker"]
    c = start_cluster(small_bundle, port=0, tls=tls, log_dir=tmp_path_factory.mktemp("secure-logs"), extra={
        "feature_svc": peers, "candidate_svc": peers,
        "ranker_svc": ["--callers", str(path), "--callers-reload-s", "0.1"]})
    try:
        yield c, ca, pki, path
    finally:
        c.stop()


def client(cluster, files: TLSFiles, token: str = "") -> RecommenderClient:
    return RecommenderClient(cluster.target, tls=ClientTLS(files.ca, files.cert, files.key), token=token)


def code_and_details(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code(), err.value.details()


def test_recommend_runs_end_to_end_on_mutual_tls(secure):
    cluster, ca, _, _ = secure
    with client(cluster, ca.issue("gateway"), TOKENS["qa"]) as c:
        resp = c.recommend("u1", k=5, explain=True)
    assert len(resp.items) == 5 and resp.items[0].contributions  # through feature_svc and candidate_svc


def test_unknown_callers_are_unauthenticated(secure):
    cluster, ca, _, _ = secure
    gateway = ca.issue("gateway")
    with client(cluster, gateway) as c:
        code, details = code_and_details(lambda: c.recommend("u1", k=3))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate (gateway, localhost, 127.0.0.1) is not a known caller" in details
    with client(cluster, gateway, token="bogus") as c:
        code, details = code_and_details(lambda: c.recommend("u1", k=3))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid (unknown or revoked)")
    with grpc.secure_channel(cluster.target, tls_credentials(gateway)) as ch:
        from recsys.v1 import recommender_pb2 as pb
        from recsys.v1 import recommender_pb2_grpc as pb_grpc
        code, details = code_and_details(lambda: pb_grpc.RecommenderStub(ch).Recommend(
            pb.RecommendRequest(user_id="u1", k=3), timeout=5, metadata=[("authorization", "Basic abc")]))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "the authorization metadata must be 'Bearer TOKEN'")


def test_methods_and_privileges_are_per_caller(secure):
    cluster, ca, _, _ = secure
    gateway = ca.issue("gateway")
    with client(cluster, gateway, TOKENS["shop"]) as shop:
        assert shop.recommend("u1", k=3).items
        code, details = code_and_details(lambda: shop.send([interaction("u1", "i1")]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "caller 'shop' may not call Feedback/Send (it may call: Recommender/Recommend)"
        for fields, privilege, name in (({"explain": True}, "explain", "explain"),
                                        ({"model_version": "whatever"}, "pin_version", "model_version"),
                                        ({"force_arms": {"exp": "arm"}}, "force_arms", "force_arms")):
            code, details = code_and_details(lambda f=fields: shop.recommend("u1", k=3, **f))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert details == f"caller 'shop' may not set {name}: it needs the privilege {privilege!r}"
    with client(cluster, gateway, TOKENS["qa"]) as qa:
        version = qa.recommend("u1", k=3).model_version
        assert qa.recommend("u1", k=3, model_version=version, explain=True).items[0].contributions
    # Identified by its certificate alone: app.example is its CN.
    with client(cluster, ca.issue("app.example")) as app:
        assert app.recommend("u2", k=3).items
        assert app.send([interaction("u2", "i1")]).accepted == 1
        code, _ = code_and_details(lambda: app.recommend("u2", k=3, explain=True))
        assert code == grpc.StatusCode.PERMISSION_DENIED


def test_a_caller_over_its_rate_is_refused(secure):
    cluster, ca, _, _ = secure
    with client(cluster, ca.issue("gateway"), TOKENS["limited"]) as c:
        assert c.recommend("u1", k=3).items and c.recommend("u1", k=3).items  # the burst
        code, details = code_and_details(lambda: c.recommend("u1", k=3))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == "caller 'limited' is over its rate limit (0.2 calls/s, burst 2); retry later"


def test_health_and_reflection_need_no_credentials_and_denials_are_counted(secure):
    cluster, ca, _, _ = secure
    with grpc.secure_channel(cluster.target, tls_credentials(ca.issue("gateway"))) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        answers = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"recsys.v1.Recommender", "recsys.v1.Feedback"} <= names
    with client(cluster, ca.issue("gateway"), "bogus") as c:
        code_and_details(lambda: c.recommend("u1", k=3))
    metrics = scrape(cluster.services["ranker_svc"].metrics_port)
    assert metrics[("recsys_auth_denied_total", (("caller", ""), ("reason", "unauthenticated")))] >= 1
    handled = metrics[("grpc_server_handled_total", (("grpc_code", "UNAUTHENTICATED"), ("grpc_method", "Recommend"),
                                                     ("grpc_service", "recsys.v1.Recommender")))]
    assert handled >= 1


def test_internal_services_accept_only_the_ranker(secure):
    """Any certificate of the CA reaches the ranker's TLS port, but only the ranker's may read users'
    features: a caller cannot go around the public API's checks."""
    cluster, ca, pki, _ = secure
    feature = cluster.services["feature_svc"].address
    request = features_pb2.GetUserFeaturesRequest(user_ids=["u1"], history_limit=5)

    def call(credentials):
        with grpc.secure_channel(feature, credentials) as ch:
            return features_pb2_grpc.FeatureStoreStub(ch).GetUserFeatures(request, timeout=5)

    assert call(tls_credentials(cluster.tls["ranker_svc"])).users[0].found
    code, details = code_and_details(lambda: call(tls_credentials(ca.issue("app.example"))))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details.startswith("feature_svc accepts calls only from ranker (tls_peers)")
    no_cert = grpc.ssl_channel_credentials(root_certificates=Path(ca.ca_path).read_bytes())
    assert code_and_details(lambda: call(no_cert))[0] == grpc.StatusCode.UNAVAILABLE
    stranger = LocalCA(pki / "other", name="other-ca").issue("ranker", ca_path=ca.ca_path)  # same name, other CA
    assert code_and_details(lambda: call(tls_credentials(stranger)))[0] == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(feature) as ch:
        code, _ = code_and_details(lambda: features_pb2_grpc.FeatureStoreStub(ch).GetUserFeatures(request, timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


def _eventually(check, within: float = 10.0):
    deadline = time.monotonic() + within
    while True:
        try:
            return check()
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_callers_file_and_the_rankers_certificate_change_live(secure):
    cluster, ca, _, path = secure
    gateway = ca.issue("gateway")
    with client(cluster, gateway, TOKENS["late"]) as late:
        assert code_and_details(lambda: late.recommend("u1", k=3))[0] == grpc.StatusCode.UNAUTHENTICATED
        path.write_text(callers_file([{"name": "late", "token_sha256": _digest(TOKENS["late"]),
                                       "methods": ["Recommend"]}]))
        _eventually(lambda: late.recommend("u1", k=3))
        path.write_text("callers:\n  - name: broken\n")  # rejected: the last good file stays in force
        port = cluster.services["ranker_svc"].metrics_port

        def rejected() -> None:
            key = ("recsys_security_reloads_total", (("result", "rejected"), ("what", "callers")))
            assert scrape(port).get(key, 0) >= 1

        _eventually(rejected)
        assert late.recommend("u1", k=3).items

    ranker = cluster.tls["ranker_svc"]

    def served() -> x509.Certificate:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(gateway.ca)
        ctx.load_cert_chain(gateway.cert, gateway.key)
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", cluster.services["ranker_svc"].port), timeout=5) as sock, \
                ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    before = served().serial_number
    ca.issue("ranker", stem=Path(ranker.cert).stem)  # renewed in place, as cert-manager does
    assert served().serial_number != before
    with client(cluster, gateway, TOKENS["qa"]) as qa:  # and the renewed certificate still reaches the others
        assert qa.recommend("u3", k=3).items
