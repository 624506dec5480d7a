"""Hot swap: a service follows the registry's CHAMPION pointer and swaps to a new version without restart.

The new version is loaded off the event loop while the old one keeps serving; the swap itself is one
reference assignment, so no request sees half of each. A version that fails to load is rejected with a
log line (and a metric) and the old version keeps serving; it is not retried until the pointer changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feature_svc.storage.base import StorageError
from recsys.metrics import MODEL_RELOADS
from recsys.registry import Registry

log = logging.getLogger(__name__)


def resolve_bundle(bundle: str, registry: str, component: str) -> tuple[Path | None, Registry | None]:
    """The bundle to start with: `bundle` if given, else the registry's champion (None while the
    registry has none yet: the service then waits for one, reporting NOT_SERVING)."""
    if bundle and registry:
        raise SystemExit(f"{component}: give either --bundle or --registry, not both")
    if bundle:
        return Path(bundle), None
    if not registry:
        raise SystemExit(f"{component}: --bundle or --registry (RECSYS_BUNDLE / RECSYS_REGISTRY) is required")
    reg = Registry(registry)
    champion = reg.champion()
    return (reg.path(champion) if champion else None), reg


async def wait_for_champion(registry: Registry, interval: float, component: str) -> Path:
    """Poll until the registry names a champion (a fresh install before its first promotion)."""
    log.warning("%s: registry %s has no champion yet; waiting (NOT_SERVING) for a promotion",
                component, registry.root)
    while True:
        try:
            version = registry.champion()
        except (OSError, UnicodeDecodeError):
            version = None
        if version:
            return registry.path(version)
        await asyncio.sleep(interval)


async def follow_champion(registry: Registry, current: str, interval: float, component: str,
                          load: Callable[[Path], Any], swap: Callable[[str, Any], None]) -> None:
    """Poll CHAMPION every `interval` seconds; load (in a thread) and swap when it changes."""
    rejected: str | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            version = registry.champion()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read the registry pointer: %s", component, exc)
            continue
        if not version or version in (current, rejected):
            continue
        try:
            loaded = await asyncio.to_thread(load, registry.path(version))
            swap(version, loaded)
        except StorageError as exc:  # transient (e.g. Redis blip): try the same version again next poll
            log.warning("%s: could not load bundle %s yet (%s); still serving %s", component, version, exc, current)
            continue
        except Exception as exc:  # any other failure leaves the serving version untouched
            log.error("%s: rejected bundle %s (%s); still serving %s", component, version, exc, current)
            MODEL_RELOADS.labels(component, "rejected").inc()
            rejected = version
            continue
        log.info("%s: now serving %s (was %s)", component, version, current)
        MODEL_RELOADS.labels(component, "ok").inc()
        current, rejected = version, None
