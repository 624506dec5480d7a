"""Rate-limited logging: one line per kind of failure per interval, with the number suppressed, instead
of one line per failed call (about 1,000 a second when a dependency is down under load)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1024):
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[Hashable, tuple[float, int]] = {}  # key -> (when last logged, suppressed since)
        self._lock = threading.Lock()

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg` at WARNING unless a line with the same key was logged in the last `every_s` seconds;
        True when it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every_s:
                self._last[key] = (last[0], last[1] + 1)
                return False
            suppressed = last[1] if last is not None else 0
            if len(self._last) >= self.max_keys and key not in self._last:
                self._last.clear()  # bounded: a flood of distinct keys only costs their first lines again
            self._last[key] = (now, 0)
        if suppressed:
            msg += f" (and {suppressed} more like it in the last {now - last[0]:.0f} s)"  # type: ignore[index]
        self.logger.warning(msg, *args)
        return True
