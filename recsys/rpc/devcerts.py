"""A throwaway certificate authority for clusters on loopback (the TLS tests, the bench's TLS figures).
Never for production: there certificates come from a Secret, e.g. issued by cert-manager (k8s/).

Keys are ECDSA P-256 (fast handshakes); files are written atomically (a rename), as a Secret update
swaps them, so a service re-reading them never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from recsys.rpc.tls import TLSFiles

LOOPBACK = ("localhost", "127.0.0.1")


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.UniformResourceIdentifier(name) if "://" in name else x509.DNSName(name)


class LocalCA:
    """A CA whose certificate is `directory/NAME.crt`; `issue` writes leaf certificates signed by it."""

    def __init__(self, directory: Path, name: str = "recsys-local-ca", days: float = 2):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_path = self.dir / f"{name}.crt"
        _write(self.ca_path, self.pem)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, sans: Sequence[str] = LOOPBACK, *, days: float = 1, ca_path: Path | None = None,
              stem: str | None = None) -> TLSFiles:
        """A certificate for `name` (its CN; also a SAN), valid for serving and as a client, written to
        `stem`.crt/.key (default: the name) beside the CA; the returned files' CA bundle is `ca_path`
        (default: this CA's)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names = list(dict.fromkeys([name, *sans]))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        base = self.dir / (stem or name.replace("/", "_").replace(":", "_"))
        cert_path, key_path = base.with_name(base.name + ".crt"), base.with_name(base.name + ".key")
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return TLSFiles(str(cert_path), str(key_path), str(ca_path or self.ca_path))


def main(argv: list[str] | None = None) -> int:
    """`python -m recsys.rpc.devcerts DIR --namespace NS`: a dev cluster's three Secrets' files (tls.crt,
    tls.key, ca.crt per service, named as the kustomize base mounts them), and the commands that create them."""
    import argparse
    import shutil

    parser = argparse.ArgumentParser(prog="python -m recsys.rpc.devcerts", description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--namespace", default="recsys-dev")
    parser.add_argument("--days", type=float, default=90)
    args = parser.parse_args(argv)
    ca = LocalCA(args.out, days=args.days)
    for component in ("ranker", "candidate", "feature"):
        name = f"recsys-{component}"
        files = ca.issue(name, [f"{name}.{args.namespace}.svc", f"{name}.{args.namespace}.svc.cluster.local"],
                         days=args.days)
        target = args.out / component
        target.mkdir(exist_ok=True)
        for src, dst in ((files.cert, "tls.crt"), (files.key, "tls.key"), (files.ca, "ca.crt")):
            shutil.copy(src, target / dst)
        print(f"kubectl -n {args.namespace} create secret generic {name}-tls --from-file={target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
