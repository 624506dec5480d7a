"""The dev cluster's certificates (`python -m recsys.rpc.devcerts`): a consistent set per service, named
as the kustomize base mounts them, for the names the services are dialled by, usable as client certs."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from recsys.rpc.devcerts import main
from recsys.rpc.tls import TLSFiles, identities


def test_dev_certificates_for_a_namespace(tmp_path, capsys):
    assert main([str(tmp_path), "--namespace", "recsys-dev", "--days", "30"]) == 0
    for component in ("ranker", "candidate", "feature"):
        d = tmp_path / component
        files = TLSFiles(str(d / "tls.crt"), str(d / "tls.key"), str(d / "ca.crt"))
        files.read()  # parses, and the key is the certificate's
        cert = x509.load_pem_x509_certificate(Path(files.cert).read_bytes())
        name = f"recsys-{component}"
        assert identities(cert)[:3] == [name, f"{name}.recsys-dev.svc", f"{name}.recsys-dev.svc.cluster.local"]
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    out = capsys.readouterr().out
    for component in ("ranker", "candidate", "feature"):
        secret = f"recsys-{component}-tls --from-file={tmp_path / component}"
        assert f"kubectl -n recsys-dev create secret generic {secret}" in out
