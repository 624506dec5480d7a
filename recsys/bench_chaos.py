"""The bench's chaos figures (recsys/chaos.py) on the bench cluster: feature_svc, candidate_svc, Redis
(when the stream is on Redis) and ranker_svc killed in turn under a steady load and brought back."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys.chaos import SteadyLoad, kill_redis, kill_service, measure, stream_event_ids
from recsys.cluster import Cluster
from recsys.feature_tables import FeatureTables


def chaos_report(cluster: Cluster, bundle: Path, users: list[str], rng: random.Random, stream: str | None,
                 redis: dict[str, subprocess.Popen] | None, console: Console, hold_s: float = 2.0) -> list[dict]:
    items = FeatureTables.load(bundle / "features").item_ids.tolist()[:5000]
    load = SteadyLoad(cluster.target, rng.sample(users, min(len(users), 2000)), items, rate=30).start()
    reports = []
    try:
        faults = [("feature_svc", lambda: kill_service(cluster, "feature_svc", hold_s)),
                  ("candidate_svc", lambda: kill_service(cluster, "candidate_svc", hold_s))]
        if redis is not None:
            faults.append(("redis", lambda: kill_redis(redis["proc"], hold_s, lambda p: redis.update(proc=p))))
        faults.append(("ranker_svc", lambda: kill_service(cluster, "ranker_svc", hold_s)))
        for name, inject in faults:
            with console.status(f"chaos: {name} killed for {hold_s:.0f} s under a steady load"):
                reports.append(measure(load, name, inject, settle_s=10.0))
    finally:
        load.stop()
    if stream:
        accepted = set(load.accepted)  # the load has stopped; a snapshot all the same
        lost = accepted - stream_event_ids(stream)
        for r in reports:
            r.events_lost = len(lost)  # counted over the whole run: an id is either on the stream or not
    t = Table(title=f"chaos: each fault for {hold_s:.0f} s under {load.rate:.0f} Recommend + {load.rate:.0f} Send/s")
    for col in ("fault", "calls", "failed", "degraded", "down s", "normal after s", "events accepted",
                "refused", "lost"):
        t.add_column(col, justify="right")
    for r in reports:
        t.add_row(r.fault, str(r.calls), str(r.failed), str(r.degraded), f"{r.down_s:.1f}", f"{r.normal_after_s:.2f}",
                  str(r.events_accepted), str(r.events_refused), str(r.events_lost))
    console.print(t)
    return [r.as_dict() for r in reports]
