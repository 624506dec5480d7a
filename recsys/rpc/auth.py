"""Who may call a service, and what it may do.

- Public API (ranker_svc, setting `callers`): every call names its caller by a bearer token
  (`authorization: Bearer TOKEN` metadata, matched by its SHA-256) or by its verified client certificate
  (a SAN or the CN), as listed in the callers file (recsys/rpc/callers.py, re-read when it changes).
  A caller may call the methods it lists, use the privileged request options it lists (checked by the
  ranker's validation through `denied_privilege`) and at most its rate (a token bucket per replica).
  Failures: UNAUTHENTICATED (no or unknown credentials), PERMISSION_DENIED (a method or option it may not
  use), RESOURCE_EXHAUSTED (over its rate); each counted in recsys_auth_denied_total.
- Internal services (setting `tls_peers`): only client certificates with one of the listed names.
Health and reflection are always open, so probes and grpcurl's `list` work without credentials.
recsys/rpc/security.py puts these checks on a service's server from its settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc import aio

from recsys.experiments.config import ConfigError
from recsys.metrics import AUTH_DENIED, SECURITY_RELOADS
from recsys.rpc.callers import PRIVILEGES, Caller, Callers, RateLimit, load_callers, short_name
from recsys.rpc.tls import peer_identities

log = logging.getLogger(__name__)

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
_CALLER: ContextVar[Caller | None] = ContextVar("recsys_caller", default=None)


def _open(method: str) -> bool:
    return method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES


def served_methods(service_names: Iterable[str]) -> list[str]:
    """Full method names of the services (their generated modules must be imported)."""
    pool = descriptor_pool.Default()
    return [f"/{name}/{m.name}" for name in service_names for m in pool.FindServiceByName(name).methods]


def current_caller() -> Caller | None:
    """The caller of the call being handled; None when caller authentication is off."""
    return _CALLER.get()


def denied_privilege(request: Any) -> str | None:
    """Why the current caller may not send this request's privileged options (PRIVILEGES), or None."""
    caller = _CALLER.get()
    if caller is None:
        return None
    for privilege, request_field in PRIVILEGES.items():
        if privilege not in caller.privileges and bool(getattr(request, request_field, None)):
            AUTH_DENIED.labels("privilege", caller.name).inc()
            return f"caller {caller.name!r} may not set {request_field}: it needs the privilege {privilege!r}"
    return None


class TokenBucket:
    """`rps` calls a second on average, `burst` at once; used on the event loop thread only."""

    def __init__(self, limit: RateLimit):
        self.limit = limit
        self.tokens = limit.burst
        self.t = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.limit.burst, self.tokens + (now - self.t) * self.limit.rps)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str | None, str | None]:
    """(token, problem) from the `authorization` metadata; (None, None) when there is none."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "the authorization metadata must be 'Bearer TOKEN'"
            return token.strip(), None
    return None, None


class LiveCallers:
    """The callers file, re-read when it changes (a rejected new file leaves the previous one in force)."""

    def __init__(self, path: str, known_methods: list[str], reload_s: float = 5.0):
        self.path = path
        self.known = known_methods
        self.reload_s = reload_s
        self._stamp = self._file_stamp()
        self.callers = load_callers(path, known_methods)  # ConfigError: the service does not start
        self.buckets: dict[str, TokenBucket] = {}
        self._settling: tuple | None = None
        log.info("callers file %s: %d callers", path, len(self.callers.callers))
        if not self.callers.callers:
            log.warning("callers file %s lists no caller: every call except health and reflection is refused",
                        path)

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)  # follows the symlink a Secret update swaps
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> bool:
        """Load the file if it changed and has held still for one check; True when a new one took effect."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        if stamp != self._settling:  # may be mid-write (an editor, `cp`): read it once it stays the same
            self._settling = stamp
            return False
        self._stamp, self._settling = stamp, None
        try:
            callers = load_callers(self.path, self.known)
        except ConfigError as exc:
            SECURITY_RELOADS.labels("callers", "rejected").inc()
            log.error("callers file rejected, keeping the previous one: %s", exc)
            return False
        SECURITY_RELOADS.labels("callers", "ok").inc()
        self.callers = callers
        self.buckets = {name: b for name, b in self.buckets.items()
                        if any(c.name == name and c.rate_limit == b.limit for c in callers.callers)}
        log.info("callers file %s reloaded: %d callers", self.path, len(callers.callers))
        return True

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                self.reload()
            except Exception:  # never let a reload bug stop the follower
                log.exception("reloading the callers file failed")

    def identify(self, context: aio.ServicerContext) -> tuple[Caller | None, str]:
        """The caller of a call, or None and why not. A bearer token, when sent, decides."""
        callers: Callers = self.callers
        token, problem = _bearer(context.invocation_metadata())
        if problem:
            return None, problem
        if token is not None:
            # A digest lookup: timing can reveal at most which digest prefixes exist, never a token.
            caller = callers.by_token.get(hashlib.sha256(token.encode()).hexdigest())
            return (caller, "") if caller else (None, "the bearer token is not valid (unknown or revoked)")
        names = peer_identities(context)
        if names:
            for name in names:
                if name in callers.by_identity:
                    return callers.by_identity[name], ""
            return None, f"the client certificate ({', '.join(names[:4])}) is not a known caller"
        return None, ("no credentials: call with the metadata 'authorization: Bearer TOKEN' or a client "
                      "certificate named in the callers file")

    def admit(self, caller: Caller) -> bool:
        if caller.rate_limit is None:
            return True
        bucket = self.buckets.get(caller.name)
        if bucket is None:
            bucket = self.buckets[caller.name] = TokenBucket(caller.rate_limit)
        return bucket.take()


def _refused(message: str) -> grpc.RpcMethodHandler:
    async def refuse(request, context: aio.ServicerContext):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class CallerInterceptor(aio.ServerInterceptor):
    """Authenticates and authorizes every call but health and reflection against the callers file."""

    def __init__(self, callers: LiveCallers):
        self.callers = callers

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or _open(method):
            return handler
        if handler.unary_unary is None:  # none is served; refuse rather than leave one unchecked
            return _refused(f"{method} is not open to callers")
        inner, live = handler.unary_unary, self.callers

        async def authorized(request, context: aio.ServicerContext):
            caller, problem = live.identify(context)
            if caller is None:
                AUTH_DENIED.labels("unauthenticated", "").inc()
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            if method not in caller.methods:
                AUTH_DENIED.labels("method", caller.name).inc()
                allowed = ", ".join(sorted(short_name(m) for m in caller.methods))
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"caller {caller.name!r} may not call "
                                    f"{short_name(method)} (it may call: {allowed})")
            if not live.admit(caller):
                AUTH_DENIED.labels("rate_limited", caller.name).inc()
                limit = caller.rate_limit
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"caller {caller.name!r} is over its rate limit ({limit.rps:g} calls/s, "
                                    f"burst {limit.burst:g}); retry later")
            token = _CALLER.set(caller)
            try:
                return await inner(request, context)
            finally:
                _CALLER.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            authorized, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


class PeerInterceptor(aio.ServerInterceptor):
    """Internal services: only client certificates with one of the `allowed` names (tls_peers)."""

    def __init__(self, service: str, allowed: Iterable[str]):
        self.service = service
        self.allowed = frozenset(allowed)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or _open(handler_call_details.method):
            return handler
        if handler.unary_unary is None:
            return _refused(f"{handler_call_details.method} is not open to callers")
        inner, allowed, service = handler.unary_unary, self.allowed, self.service

        async def checked(request, context: aio.ServicerContext):
            names = peer_identities(context)
            if allowed.isdisjoint(names):
                AUTH_DENIED.labels("peer", "").inc()
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{service} accepts calls only from {', '.join(sorted(allowed))} "
                                    f"(tls_peers); the client certificate names {', '.join(names) or 'nothing'}")
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
