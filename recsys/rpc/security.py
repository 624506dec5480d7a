"""A service's transport security and caller checks, from its settings: TLS unless `plaintext` is set
explicitly (recsys/rpc/tls.py), the health-only plaintext port for probes, and the interceptors that
check callers (the ranker's callers file) or peers (tls_peers), with their followers (recsys/rpc/auth.py).
Configuration errors stop the service at start with a message naming the setting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from recsys.experiments.config import ConfigError
from recsys.rpc.auth import CallerInterceptor, LiveCallers, PeerInterceptor, served_methods
from recsys.rpc.tls import ChannelCertificates, ServerCertificates, TLSError, TLSFiles

log = logging.getLogger(__name__)

# gRPC Python either requires and verifies a client certificate or asks for none: no "verify if presented".
CLIENT_AUTH = ("require", "none")


@dataclass
class Security:
    """How one service's gRPC port is secured; the default is plaintext without caller checks."""

    tls: TLSFiles | None = None
    client_auth: str = "require"
    health_port: int = 0
    tls_reload_s: float = 10.0
    callers: LiveCallers | None = None
    interceptors: list[aio.ServerInterceptor] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    service: str = ""  # the `service` label of its metrics (several services may share a process)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.tls is None:
            return None
        return ServerCertificates(self.tls, self.client_auth == "require", self.service).credentials

    def channel_certificates(self) -> ChannelCertificates | None:
        """The service's own certificate as a client (mutual TLS to its dependencies), or None: plaintext."""
        return None if self.tls is None else ChannelCertificates(self.tls, self.tls_reload_s, self.service)

    def start(self) -> None:
        if self.callers is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.callers.follow()))

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()


def security_from(settings: Any, service: str, caller_services: Iterable[str] = ()) -> Security:
    """A service's Security from its settings (plaintext, tls_*, health_port, tls_peers, callers);
    configuration errors stop the service with a message naming the setting."""
    files = {k: getattr(settings, k, "") for k in ("tls_cert", "tls_key", "tls_ca")}
    peers = list(getattr(settings, "tls_peers", []) or [])
    client_auth = getattr(settings, "tls_client_auth", "require")
    if client_auth not in CLIENT_AUTH:
        raise SystemExit(f"{service}: tls_client_auth must be one of {', '.join(CLIENT_AUTH)}, got {client_auth!r}")
    if settings.plaintext:
        if any(files.values()) or peers:
            raise SystemExit(f"{service}: plaintext=true contradicts "
                             f"{', '.join(k for k, v in files.items() if v) or 'tls_peers'}: choose one")
        tls = None
        log.warning("%s: plaintext gRPC (plaintext=true): no encryption, no client certificates", service)
    else:
        missing = [k for k, v in files.items() if not v]
        if missing:
            raise SystemExit(f"{service}: TLS is on unless plaintext=true is set: give {', '.join(missing)} (PEM "
                             "files, e.g. a mounted Kubernetes TLS Secret), or plaintext=true for a local run")
        tls = TLSFiles(files["tls_cert"], files["tls_key"], files["tls_ca"])
        try:
            tls.read()
        except TLSError as exc:
            raise SystemExit(f"{service}: {exc}") from None
    security = Security(tls, client_auth, getattr(settings, "health_port", 0), getattr(settings, "tls_reload_s", 10.0),
                        service=service)
    if peers:
        security.interceptors.append(PeerInterceptor(service, peers))
    path = getattr(settings, "callers", "")
    if path:
        try:
            security.callers = LiveCallers(path, served_methods(caller_services),
                                           getattr(settings, "callers_reload_s", 5.0))
        except ConfigError as exc:
            raise SystemExit(f"{service}: {exc}") from None
        security.interceptors.append(CallerInterceptor(security.callers))
    elif caller_services:
        log.warning("%s: caller authentication is off (no callers file): every caller that connects may call "
                    "every method and use every option", service)
    return security
