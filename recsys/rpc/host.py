"""One host for every service: start, health (with `liveness`), metrics, reflection, the versions a service
holds (from bundles or following a registry's champion and live set), signal handling and graceful drain.

A service contributes its servicer and a `Component`: how to load what it serves from a bundle directory
into a `LiveVersions`. The host does the rest, the same way in all three services.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from recsys.metrics import MODEL_RELOADS
from recsys.registry import Registry
from recsys.rpc.admission import ServerLimits
from recsys.rpc.security import Security
from recsys.rpc.server import Server
from recsys.rpc.versions import LiveVersions
from recsys.storage.base import StorageError
from recsys.v1 import versions_pb2, versions_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Loaded(Generic[T]):
    version: str
    created: float
    value: T


@dataclass
class Component(Generic[T]):
    """What a service serves per model version."""

    name: str                                        # "candidate_svc"
    load: Callable[[Path], Loaded[T]]                # blocking; run in a worker thread
    versions: LiveVersions[T]
    # Awaited before a new champion becomes the default (ranker_svc: until its dependencies hold it).
    ready: Callable[[str], Awaitable[bool]] | None = None


class VersionsServicer(versions_pb2_grpc.ModelVersionsServicer):
    def __init__(self, component: str, versions: LiveVersions[Any]):
        self.component = component
        self.live = versions

    async def List(self, request, context) -> versions_pb2.ListVersionsResponse:
        return versions_pb2.ListVersionsResponse(component=self.component, default_version=self.live.default_version,
                                                 versions=self.live.versions())


class ServiceHost:
    def __init__(self, name: str, host: str, port: int, metrics_port: int, security: Security | None = None,
                 limits: ServerLimits | None = None):
        self.name = name
        self.server = Server(host, port, metrics_port, security, limits)
        self._tasks: list[asyncio.Task] = []

    def add(self, register: Callable[[object, Any], None], servicer: object, service_name: str) -> None:
        self.server.add(register, servicer, service_name)

    async def run(self, component: Component[Any] | None, bundles: list[str], registry: str,
                  reload_interval_s: float, default_version: str = "", ready: asyncio.Event | None = None,
                  on_stop: Callable[[], Awaitable[None] | None] | None = None,
                  on_loaded: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or `stop()`): load the versions, report SERVING, follow the registry.
        on_loaded runs once the initial versions are all loaded, before SERVING."""
        if bundles and registry:
            raise SystemExit(f"{self.name}: give either --bundle or --registry, not both")
        if component is not None:
            self.add(versions_pb2_grpc.add_ModelVersionsServicer_to_server,
                     VersionsServicer(self.name, component.versions), "recsys.v1.ModelVersions")
        await self.server.start(serving=False)  # NOT_SERVING until a model is loaded
        try:
            if component is not None:
                if registry:
                    follower = RegistryFollower(component, Registry(registry), reload_interval_s)
                    await follower.initial()
                    self._tasks.append(asyncio.create_task(follower.follow()))
                elif bundles:
                    for b in bundles:
                        loaded = await asyncio.to_thread(component.load, Path(b))
                        component.versions.add(loaded.version, loaded.value, loaded.created)
                else:
                    raise SystemExit(f"{self.name}: --bundle or --registry (RECSYS_BUNDLE / RECSYS_REGISTRY) "
                                     "is required")
                if default_version:
                    component.versions.set_default(default_version)
                log.info("%s: serving %s (default %s)", self.name, ", ".join(component.versions.versions()),
                         component.versions.default_version)
            if on_loaded is not None:
                on_loaded()
            gc.freeze()  # loaded models are long-lived: keep the collector from rescanning them (p99)
            await self.server.set_serving(True)
            if ready is not None:
                ready.set()
            await self.server.serve()
        finally:
            for t in self._tasks:
                t.cancel()
            if on_stop is not None:
                result = on_stop()
                if asyncio.iscoroutine(result):
                    await result

    def stop(self) -> None:
        self.server.stop()


class RegistryFollower:
    """Holds the registry's champion (the default) and its live set; polls both and loads or drops versions.

    A new version is loaded off the event loop while the others keep serving; making it the default is one
    reference assignment, so no request sees half of each. The previous champion stays loaded for requests
    pinned to it. A version that fails to load is rejected with a log line and a metric and not retried
    until the registry names it anew; a transient storage failure is retried on the next poll.
    """

    def __init__(self, component: Component[Any], registry: Registry, interval: float):
        self.c = component
        self.registry = registry
        self.interval = interval
        self.previous = ""
        self.rejected: set[str] = set()

    def _serving(self) -> tuple[str | None, list[str]]:
        try:
            return self.registry.serving()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read the registry: %s", self.c.name, exc)
            return None, []

    async def initial(self) -> None:
        champion, _ = self._serving()
        if champion is None:
            log.warning("%s: registry %s has no champion yet; waiting (NOT_SERVING) for a promotion",
                        self.c.name, self.registry.root)
        while champion is None:
            await asyncio.sleep(self.interval)
            champion, _ = self._serving()
        loaded = await asyncio.to_thread(self.c.load, self.registry.path(champion))
        self.c.versions.add(loaded.version, loaded.value, loaded.created)
        self.c.versions.set_default(loaded.version)
        await self.sync(first=True)

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sync()

    async def sync(self, first: bool = False) -> None:
        champion, wanted = self._serving()
        if champion is None:
            return
        held = self.c.versions
        for version in wanted:
            if version in held or version in self.rejected:
                continue
            try:
                loaded = await asyncio.to_thread(self.c.load, self.registry.path(version))
            except StorageError as exc:  # transient (e.g. a Redis blip): the same version again next poll
                log.warning("%s: could not load bundle %s yet (%s)", self.c.name, version, exc)
                continue
            except Exception as exc:  # any other failure leaves the serving versions untouched
                log.error("%s: rejected bundle %s (%s); still serving %s", self.c.name, version, exc,
                          held.default_version)
                MODEL_RELOADS.labels(self.c.name, "rejected").inc()
                self.rejected.add(version)
                continue
            held.add(loaded.version, loaded.value, loaded.created)
            if not first:
                MODEL_RELOADS.labels(self.c.name, "ok").inc()
        current = held.default_version
        if champion != current and champion in held and (self.c.ready is None or await self.c.ready(champion)):
            held.set_default(champion)
            self.previous = current
            log.info("%s: now serving %s (was %s)", self.c.name, champion, current)
        self.rejected &= set(wanted)  # a version the registry drops and names again is tried again
        held.retain(set(wanted) | {held.default_version, self.previous})
