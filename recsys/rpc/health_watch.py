"""Readiness that follows what a service can honestly serve: a check run every second (feature_svc:
its storage answers a ping) turns the gRPC health status NOT_SERVING while it fails and SERVING again when
it passes, so load balancers and the ranker's client-side balancing move away from a replica whose Redis
is unreachable. The "liveness" status is untouched: a service waiting for its storage is not restarted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from recsys.rpc.server import Server

log = logging.getLogger(__name__)


async def follow_health(server: Server, check: Callable[[], bool], what: str, started: asyncio.Event,
                        interval_s: float = 1.0) -> None:
    """Once `started` is set (the service reported SERVING), keep the status equal to check()."""
    await started.wait()
    serving = True
    while True:
        await asyncio.sleep(interval_s)
        try:
            ok = bool(await asyncio.wait_for(asyncio.to_thread(check), timeout=max(interval_s, 1.0)))
        except Exception:  # a check that raises or hangs is a failed check
            ok = False
        if ok != serving:
            serving = ok
            await server.set_serving(ok)
            if ok:
                log.info("%s answers again: SERVING", what)
            else:
                log.warning("%s does not answer: NOT_SERVING until it does", what)
