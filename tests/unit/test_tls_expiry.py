"""recsys_tls_certificate_expiry_timestamp_seconds{service, side}: the notAfter of the certificate a service
loaded, set at start and at every accepted reload (the RecsysTLSCertificateExpiringSoon alert reads it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from cryptography import x509
from prometheus_client import REGISTRY

from recsys.rpc.devcerts import LocalCA
from recsys.rpc.security import security_from
from recsys.rpc.tls import ChannelCertificates, ServerCertificates, TLSFiles

METRIC = "recsys_tls_certificate_expiry_timestamp_seconds"


def _gauge(service: str, side: str) -> float | None:
    return REGISTRY.get_sample_value(METRIC, {"service": service, "side": side})


def _not_after(files: TLSFiles) -> float:
    return x509.load_pem_x509_certificate(Path(files.cert).read_bytes()).not_valid_after_utc.timestamp()


def _install(src: TLSFiles, dst: TLSFiles) -> None:
    """As a Secret volume update: every file replaced whole."""
    for a, b in ((src.cert, dst.cert), (src.key, dst.key), (src.ca, dst.ca)):
        shutil.copy(a, b + ".new")
        Path(b + ".new").replace(b)


def test_loading_and_reloading_a_certificate_sets_the_gauge_to_its_not_after(tmp_path):
    ca = LocalCA(tmp_path / "ca")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live = TLSFiles(str(live_dir / "tls.crt"), str(live_dir / "tls.key"), str(live_dir / "ca.crt"))
    first = ca.issue("svc", days=3)
    _install(first, live)

    server = ServerCertificates(live, require_client_auth=True, service="expiry_test_svc")
    client = ChannelCertificates(live, reload_s=60, service="expiry_test_svc")
    assert _gauge("expiry_test_svc", "server") == _not_after(first)
    assert _gauge("expiry_test_svc", "client") == _not_after(first)

    renewed = ca.issue("svc", days=30, stem="svc-renewed")
    assert _not_after(renewed) > _not_after(first) + 20 * 86400
    _install(renewed, live)
    assert server.fetch() is not None  # gRPC calls this at the next handshake
    assert client.changed()
    assert _gauge("expiry_test_svc", "server") == _not_after(renewed)
    assert _gauge("expiry_test_svc", "client") == _not_after(renewed)

    # A rejected set (the key of another certificate) keeps serving, and reporting, the previous one.
    other = ca.issue("other", days=365)
    shutil.copy(other.key, live.key + ".new")
    Path(live.key + ".new").replace(live.key)
    assert server.fetch() is None and not client.changed()
    assert _gauge("expiry_test_svc", "server") == _not_after(renewed)
    assert _gauge("expiry_test_svc", "client") == _not_after(renewed)


def test_a_services_security_labels_the_gauge_with_the_service(tmp_path):
    files = LocalCA(tmp_path).issue("feature", days=5)
    settings = SimpleNamespace(plaintext=False, tls_cert=files.cert, tls_key=files.key, tls_ca=files.ca)
    security = security_from(settings, "expiry_test_feature")
    assert security.server_credentials() is not None
    assert security.channel_certificates() is not None
    assert _gauge("expiry_test_feature", "server") == _gauge("expiry_test_feature", "client") == _not_after(files)
