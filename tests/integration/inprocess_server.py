"""A recsys Server on loopback in a thread of its own (its own event loop), for tests that host a real
servicer in the test's process (to read its state or its metrics directly)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from recsys.rpc.admission import ServerLimits
from recsys.rpc.server import Server


class InProcessServer:
    """`with InProcessServer(register) as srv:` serves what `register(server)` adds on `srv.port`."""

    def __init__(self, register: Callable[[Server], None]):
        self.register = register
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = Server("127.0.0.1", 0, limits=ServerLimits(drain_grace_s=0.1))
        self.register(self.server)
        self.port = await self.server.start()
        self._ready.set()
        await self.server.serve()

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self._thread.join(10)
