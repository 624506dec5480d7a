"""Transport security: TLS on every gRPC port, mutual TLS between the services, certificates and keys read
from PEM files (a mounted Kubernetes TLS Secret: `tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes
it) and re-read when they change, without a restart.

Servers get grpc's dynamic credentials: gRPC asks `ServerCertificates.fetch` at each new connection's
handshake, which compares the files' stat stamps and hands over the new certificate, key and client CA
once they changed and form a consistent set (a half-copied rotation keeps the previous set until the
copy is whole). Established connections keep the certificate they were opened with.
Clients (the ranker's channels to its dependencies) get `ChannelCertificates`: channel credentials built
from the same files, rebuilt when the files change; the ranker then opens new channels on them.
The public client (recsys/client.py) takes `ClientTLS`, or RECSYS_CLIENT_CA/CERT/KEY from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recsys.metrics import SECURITY_RELOADS, TLS_CERT_EXPIRY

log = logging.getLogger(__name__)


class TLSError(ValueError):
    """Certificate files that cannot be used, with the file and the reason."""


@dataclass(frozen=True)
class TLSFiles:
    """A certificate chain, its private key and the CA bundle that peers' certificates must chain to."""

    cert: str
    key: str
    ca: str

    def stamp(self) -> tuple:
        """What changes when any file is rewritten or its Secret's symlink swapped (stat follows links)."""
        out = []
        for path in (self.cert, self.key, self.ca):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(cert, key, ca) PEM bytes, checked: parseable, and the key is the certificate's."""
        pems = []
        for what, path in (("certificate", self.cert), ("private key", self.key), ("CA bundle", self.ca)):
            try:
                pems.append(Path(path).read_bytes())
            except OSError as exc:
                raise TLSError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
        cert, key, ca = pems
        leaf = _certificates(cert, self.cert)[0]
        _certificates(ca, self.ca)
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            raise TLSError(f"{self.key}: not an unencrypted PEM private key ({exc})") from exc
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise TLSError(f"{self.key} is not the private key of the certificate {self.cert}")
        return cert, key, ca


def not_after(pem: bytes, path: str) -> float:
    """The notAfter of the first (leaf) certificate of a PEM chain, as a unix time."""
    return _certificates(pem, path)[0].not_valid_after_utc.timestamp()


def _certificates(pem: bytes, path: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TLSError(f"{path}: not a PEM certificate ({exc})") from exc
    return certs


def _describe(files: TLSFiles) -> str:
    cert = _certificates(Path(files.cert).read_bytes(), files.cert)[0]
    names = identities(cert)
    until = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{', '.join(names) or 'no name'} (serial {cert.serial_number:x}, valid until {until})"


def identities(cert: x509.Certificate) -> list[str]:
    """The names a certificate proves: its subject alternative names (DNS, URI, IP, e-mail), then its CN."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(v) for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.IPAddress, x509.RFC822Name)
                  for v in san.get_values_for_type(kind)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return names


def peer_identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The names of the caller's verified client certificate (empty without one, or on plaintext)."""
    auth = context.auth_context()
    raw = [*auth.get("x509_subject_alternative_name", ()), *auth.get("x509_common_name", ())]
    return list(dict.fromkeys(v.decode() if isinstance(v, bytes) else str(v) for v in raw))  # a CN is often a SAN too


def _export_expiry(service: str, side: str, cert: bytes, path: str) -> None:
    """The expiry gauge, from the certificate just loaded (not the file, which may already be the next one)."""
    TLS_CERT_EXPIRY.labels(service, side).set(not_after(cert, path))


class ServerCertificates:
    """Server credentials that follow the files (grpc.dynamic_ssl_server_credentials)."""

    def __init__(self, files: TLSFiles, require_client_auth: bool, service: str = ""):
        self.files = files
        self.service = service
        self._stamp = files.stamp()
        cert, key, ca = files.read()  # a service does not start on unusable files
        self.reloads = 0
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._config(cert, key, ca), self.fetch, require_client_authentication=require_client_auth)
        _export_expiry(service, "server", cert, files.cert)
        log.info("TLS: serving certificate %s; client certificates %s", _describe(files),
                 "required" if require_client_auth else "not asked for")

    @staticmethod
    def _config(cert: bytes, key: bytes, ca: bytes):
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self):
        """Called by gRPC before each new handshake: a new configuration once the files changed, else None.
        Never raises (it runs inside gRPC's handshaker)."""
        try:
            stamp = self.files.stamp()
            if stamp == self._stamp:
                return None
            self._stamp = stamp  # a rejected set is not re-read at every handshake: only when it changes again
            try:
                cert, key, ca = self.files.read()
            except TLSError as exc:
                SECURITY_RELOADS.labels("server_tls", "rejected").inc()
                log.error("TLS: new certificate files rejected, still serving the previous ones: %s", exc)
                return None
            self.reloads += 1
            SECURITY_RELOADS.labels("server_tls", "ok").inc()
            _export_expiry(self.service, "server", cert, self.files.cert)
            log.info("TLS: reloaded; now serving %s", _describe(self.files))
            return self._config(cert, key, ca)
        except Exception:  # pragma: no cover - a bug here must not break handshakes
            log.exception("TLS: certificate reload failed")
            return None


class ChannelCertificates:
    """Client credentials (mutual TLS) from the files, rebuilt when they change."""

    def __init__(self, files: TLSFiles, reload_s: float = 10.0, service: str = ""):
        self.files = files
        self.reload_s = reload_s
        self.service = service
        self._stamp = files.stamp()
        self.credentials = self._build()

    def _build(self) -> grpc.ChannelCredentials:
        cert, key, ca = self.files.read()
        _export_expiry(self.service, "client", cert, self.files.cert)
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def changed(self) -> bool:
        """True, with new `credentials`, when the files changed and the new set is usable."""
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.credentials = self._build()
        except TLSError as exc:
            SECURITY_RELOADS.labels("client_tls", "rejected").inc()
            log.error("TLS: new client certificate files rejected, keeping the previous ones: %s", exc)
            return False
        SECURITY_RELOADS.labels("client_tls", "ok").inc()
        log.info("TLS: client certificate reloaded: %s", _describe(self.files))
        return True

    async def follow(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Check the files every `reload_s`; await `on_change()` after each usable change."""
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                if await asyncio.to_thread(self.changed):
                    await on_change()
            except Exception:  # never let a reload bug stop the follower
                log.exception("TLS: client certificate reload failed")


@dataclass(frozen=True)
class ClientTLS:
    """What a client of the public API presents: the CA to verify the ranker by, and optionally a client
    certificate (mutual TLS; the caller's identity in the callers file)."""

    ca: str
    cert: str = ""
    key: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise TLSError(f"cannot read {path}: {exc.strerror or exc}") from exc

        if bool(self.cert) != bool(self.key):
            raise TLSError("a client certificate needs its key (and a key its certificate)")
        return grpc.ssl_channel_credentials(root_certificates=read(self.ca), private_key=read(self.key),
                                            certificate_chain=read(self.cert))

    @staticmethod
    def from_env() -> ClientTLS | None:
        """RECSYS_CLIENT_CA (and RECSYS_CLIENT_CERT, RECSYS_CLIENT_KEY), or None: plaintext."""
        ca = os.environ.get("RECSYS_CLIENT_CA", "")
        cert, key = os.environ.get("RECSYS_CLIENT_CERT", ""), os.environ.get("RECSYS_CLIENT_KEY", "")
        return ClientTLS(ca, cert, key) if ca or cert else None

