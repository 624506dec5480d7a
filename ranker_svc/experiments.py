"""The ranker's experiments: the file (setting `experiments`) loaded and reloaded when it changes or the
live versions change, and each request routed through it (recsys/experiments/router.py).

An invalid new file is logged and counted (recsys_experiments_config_loads_total{result="invalid"}) and the
previous one keeps serving; an invalid or missing file at start means no experiments until it is fixed.
The first load waits until the initial versions are all loaded (`start`, before SERVING): a file whose arms
name several versions would otherwise be rejected while they load one at a time.
A changed file is read once it has held still for one check, so a half-written file is never loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from scipy.stats import chi2

from recsys.experiments.config import ConfigError, ExperimentsConfig, load_config
from recsys.metrics import EXPERIMENT_ARM, EXPERIMENT_CONFIG_LOADS, EXPERIMENT_REQUESTS, EXPERIMENT_SRM_CRITICAL

log = logging.getLogger("ranker_svc.experiments")


class LiveExperiments:
    def __init__(self, path: str, live_versions: Callable[[], set[str]]):
        self.path = path
        self.live_versions = live_versions
        self.config = ExperimentsConfig()
        self.error: str | None = None
        self._seen: tuple | None = None  # (file stamp, live versions) last validated
        self._settling: tuple | None = None  # a new file stamp seen once: loaded when it holds still
        self.started = False
        for result in ("ok", "invalid"):
            EXPERIMENT_CONFIG_LOADS.labels(result)

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)  # follows the symlink a ConfigMap update swaps
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> bool:
        """Load the file if it or the live versions changed; True when a new config took effect."""
        versions = frozenset(self.live_versions())
        if not self.started or not self.path or not versions:  # nothing to route, nothing to check arms against
            return False
        stamp = self._stamp()
        seen = (stamp, versions)
        if seen == self._seen:
            return False
        if self._seen is not None and stamp != self._seen[0] and stamp != self._settling:
            # the file changed since the last look: it may be mid-write (an editor or `cp` writes in place),
            # so it is read once it has stayed the same for one check (a ConfigMap swap is atomic anyway)
            self._settling = stamp
            return False
        self._seen, self._settling = seen, None
        try:
            config = load_config(self.path, set(versions))
        except ConfigError as exc:
            EXPERIMENT_CONFIG_LOADS.labels("invalid").inc()
            if str(exc) != self.error:
                log.error("experiments file rejected, %s: %s", "keeping the previous one" if self.config.layers
                          else "no experiments run", exc)
            self.error = str(exc)
            return False
        EXPERIMENT_CONFIG_LOADS.labels("ok").inc()
        self.config, self.error = config, None
        export_arms(config)
        running = [e.name for e in config.experiments() if e.status == "running"]
        log.info("experiments file %s loaded: %d layers, running: %s", self.path, len(config.layers),
                 ", ".join(running) or "none")
        return True

    def start(self) -> bool:
        """The initial versions are loaded: load the file now, and follow it and the versions from here."""
        self.started = True
        return self.reload()

    async def follow(self, interval_s: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # never let a reload bug stop the follower
                log.exception("reloading the experiments file failed")
            await asyncio.sleep(interval_s)


def export_arms(config: ExperimentsConfig) -> None:
    """The running experiments' arms as gauges (what the alerts compare against), and every arm's outcome
    counters at 0, so a control with no error yet still has an error ratio of 0 rather than none."""
    EXPERIMENT_ARM.clear()
    EXPERIMENT_SRM_CRITICAL.clear()
    for exp in config.experiments():
        if exp.status != "running":
            continue
        total = sum(a.weight for a in exp.arms)
        for arm in exp.arms:
            EXPERIMENT_ARM.labels(exp.name, arm.name, "true" if arm.control else "false").set(arm.weight / total)
            for outcome in ("ok", "empty", "fallback", "error"):
                EXPERIMENT_REQUESTS.labels(exp.name, arm.name, outcome, "false")
        EXPERIMENT_SRM_CRITICAL.labels(exp.name).set(float(chi2.ppf(0.999, len(exp.arms) - 1)))
