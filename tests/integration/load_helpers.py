"""Helpers of the bounded-work, overload and fuzz tests: a service's resident memory sampled while a test
runs (from /proc), and the change of its Prometheus counters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from recsys.scrape import scrape


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class PeakRSS:
    """`with PeakRSS(pid) as peak:` samples the process's RSS every 10 ms; `peak.growth_mb` afterwards is
    the highest sample minus the one taken on entry."""

    def __init__(self, pid: int):
        self.pid = pid
        self.base = self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return self.peak - self.base


def counter(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


class Counters:
    """Counter values of a service at entry; `delta(name, **labels)` is the change since."""

    def __init__(self, metrics_port: int):
        self.port = metrics_port
        self.before = scrape(metrics_port)

    def delta(self, name: str, **labels: str) -> float:
        return counter(scrape(self.port), name, **labels) - counter(self.before, name, **labels)
