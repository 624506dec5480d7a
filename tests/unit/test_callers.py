"""The callers file (recsys/rpc/callers.py): what it accepts, and a FILE:LINE error for what it does not;
the token bucket of the rate limits; security_from's refusals of contradicting or missing TLS settings."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import pytest

from recsys.experiments.config import ConfigError
from recsys.rpc.auth import TokenBucket, served_methods
from recsys.rpc.callers import RateLimit, parse_callers, resolve
from recsys.rpc.devcerts import LocalCA
from recsys.rpc.security import security_from
from recsys.v1 import feedback_pb2, recommender_pb2, versions_pb2  # noqa: F401  (their services' descriptors)

KNOWN = served_methods(["recsys.v1.Recommender", "recsys.v1.Feedback", "recsys.v1.ModelVersions"])
DIGEST = hashlib.sha256(b"s3cret-token").hexdigest()
GOOD = f"""\
callers:
  - name: shop
    token_sha256: {DIGEST.upper()}
    methods: [Recommend]
    rate_limit: {{rps: 5, burst: 10}}
  - name: events
    identity: spiffe://cluster.local/ns/data/sa/events
    methods: [Feedback]
  - name: qa
    identity: qa.example.com
    methods: ["*"]
    privileges: [pin_version, force_arms, explain]
"""


def test_a_good_file():
    callers = parse_callers(GOOD, "callers.yaml", KNOWN)
    shop = callers.by_token[DIGEST]  # digests are compared in lower case
    assert shop.name == "shop" and shop.methods == {"/recsys.v1.Recommender/Recommend"}
    assert shop.rate_limit == RateLimit(5.0, 10.0) and not shop.privileges
    events = callers.by_identity["spiffe://cluster.local/ns/data/sa/events"]
    assert events.methods == {"/recsys.v1.Feedback/Send"}
    qa = callers.by_identity["qa.example.com"]
    assert qa.methods == set(KNOWN) and qa.privileges == {"pin_version", "force_arms", "explain"}
    assert parse_callers("", "empty.yaml", KNOWN).callers == ()


def test_method_names_resolve_in_every_spelling():
    recommend = {"/recsys.v1.Recommender/Recommend"}
    for entry in ("Recommend", "Recommender", "Recommender/Recommend", "recsys.v1.Recommender/Recommend",
                  "/recsys.v1.Recommender/Recommend", "recsys.v1.Recommender"):
        assert resolve(entry, KNOWN) == recommend, entry
    assert resolve("ModelVersions", KNOWN) == {"/recsys.v1.ModelVersions/List"}
    assert resolve("Recomend", KNOWN) == set()


@pytest.mark.parametrize("text, line, key, reason", [
    ("callers:\n  - name: a\n    token_sha256: abc\n    methods: [Recommend]\n", 3, "callers[0].token_sha256",
     "64 hex digits"),
    ("callers:\n  - name: a\n    methods: [Recommend]\n", 2, "callers[0]", "needs token_sha256"),
    (f"callers:\n  - name: a\n    token_sha256: {DIGEST}\n    methods: [Recommend, Recomend]\n", 4,
     "callers[0].methods[1]", "'Recomend' is not a method"),
    (f"callers:\n  - name: a\n    token_sha256: {DIGEST}\n    methods: [Recommend]\n    privileges: [root]\n", 5,
     "callers[0].privileges[0]", "unknown privilege 'root'"),
    (f"callers:\n  - name: a\n    token_sha256: {DIGEST}\n    methods: [Recommend]\n"
     f"  - name: b\n    token_sha256: {DIGEST}\n    methods: [Recommend]\n", 5, "callers[1].token_sha256",
     "same token"),
    ("callers:\n  - name: a\n    identity: x\n    methods: [Recommend]\n"
     "  - name: a\n    identity: y\n    methods: [Recommend]\n", 5, "callers[1].name", "given to another caller"),
    ("callers:\n  - name: a\n    identity: x\n    methods: [Recommend]\n    rate_limit: {rps: 0}\n", 5,
     "callers[0].rate_limit.rps", "must be in (0"),
    ("callers:\n  - name: a\n    identity: x\n    methods: [Recommend]\n    rate_limit: {rps: .nan}\n", 5,
     "callers[0].rate_limit.rps", "must be in (0"),
    ("callers:\n  - name: a\n    identity: x\n    method: [Recommend]\n", 4, "callers[0].method", "unknown key"),
    ("callers:\n  - name: a\n    identity: x\n", 2, "callers[0].methods", "is required"),
    ("users: []\n", 1, "users", "unknown key"),
    ("callers: [\n", 2, "(file)", "not valid YAML"),
])
def test_a_bad_file_is_an_error_naming_file_line_and_key(text, line, key, reason):
    with pytest.raises(ConfigError) as err:
        parse_callers(text, "callers.yaml", KNOWN)
    assert (err.value.file, err.value.line, err.value.key) == ("callers.yaml", line, key), str(err.value)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"callers.yaml:{line}: {key}: ")


def test_token_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(RateLimit(rps=20.0, burst=3.0))
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    time.sleep(0.06)  # 1.2 tokens at 20/s
    assert bucket.take() and not bucket.take()


@dataclass
class _Settings:
    plaintext: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_client_auth: str = "require"
    tls_peers: list[str] = field(default_factory=list)
    health_port: int = 0


def test_tls_is_required_unless_plaintext_is_set_explicitly(tmp_path):
    with pytest.raises(SystemExit, match="TLS is on unless plaintext=true is set: give tls_cert, tls_key, tls_ca"):
        security_from(_Settings(), "feature_svc")
    assert security_from(_Settings(plaintext=True), "feature_svc").tls is None
    files = LocalCA(tmp_path).issue("feature")
    with pytest.raises(SystemExit, match="plaintext=true contradicts tls_cert"):
        security_from(_Settings(plaintext=True, tls_cert=files.cert), "feature_svc")
    with pytest.raises(SystemExit, match="tls_client_auth must be one of require, none"):
        security_from(_Settings(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca, tls_client_auth="maybe"),
                      "feature_svc")
    other = LocalCA(tmp_path / "other").issue("other")
    with pytest.raises(SystemExit, match="is not the private key of the certificate"):
        security_from(_Settings(tls_cert=files.cert, tls_key=other.key, tls_ca=files.ca), "feature_svc")
    with pytest.raises(SystemExit, match="cannot read the CA bundle /nonexistent/ca.crt"):
        security_from(_Settings(tls_cert=files.cert, tls_key=files.key, tls_ca="/nonexistent/ca.crt"), "feature_svc")
    ok = security_from(_Settings(tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca, tls_peers=["ranker"]),
                       "feature_svc")
    assert ok.tls == files and len(ok.interceptors) == 1
