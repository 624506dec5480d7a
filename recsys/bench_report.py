"""The feedback section of `make bench`: runs recsys.bench_feedback's measurements on a running cluster
and prints them as tables."""

from __future__ import annotations

import random
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys.bench_feedback import cache_latency, exposure_cost, ingestion, interleaved, visibility
from recsys.cluster import Cluster
from recsys.feature_tables import FeatureTables


def feedback_report(cluster: Cluster, bundle: Path, users: list[str], rng: random.Random, stream: str,
                    console: Console) -> dict:
    sample = rng.sample(users, min(len(users), 5300))
    items = FeatureTables.load(bundle / "features").item_ids.tolist()[:5000]
    out: dict = {"stream": stream.split("?")[0]}
    feature_addr = cluster.services["feature_svc"].address
    # quiet measurements first: after the ingestion burst the consumers have a backlog to work through
    out["visible"] = visibility(cluster.target, feature_addr, sample[:200])
    out["cache"] = cache_latency(cluster.target, sample[200:700])
    out["exposures"] = exposure_cost(cluster.target, sample[700:1300])
    out["ingest"] = [ingestion(cluster.target, sample, items, batch) for batch in (1, 100)]
    out["backlog_drained_s"] = visibility(cluster.target, feature_addr, sample[:1], n=1, timeout=300).get("max_ms",
                                                                                                           0) / 1000
    # Metarank's published ingestion range (1,000-3,000 events/s), capped by what Send sustained here
    ceiling = max(r["events_per_s"] for r in out["ingest"])
    rates = [0.0] + [r for r in (1000.0, 3000.0) if r <= ceiling]
    # the events name users measured above, not those measured while they stream in (see interleaved)
    runs = interleaved(cluster.target, cluster.stream, sample[1300:], items, rates, event_users=sample[:1300])
    out["recommend_while_ingesting"] = runs

    t = Table(title=f"Feedback/Send ingestion ({out['stream']})")
    for col in ("batch", "in flight", "events/s", "Send p50 ms", "Send p99 ms", "errors"):
        t.add_column(col, justify="right")
    for r in out["ingest"]:
        t.add_row(str(r["batch"]), str(r["concurrency"]), f"{r['events_per_s']:,.0f}", f"{r['send_p50_ms']:.2f}",
                  f"{r['send_p99_ms']:.2f}", str(r["errors"]))
    console.print(t)
    console.print(f"the consumers' backlog after the ingestion runs drained in {out['backlog_drained_s']:.1f}s")
    t = Table(title="latency at the client")
    for col in ("what", "n", "p50 ms", "p99 ms", "note"):
        t.add_column(col, justify="right")
    v = out["visible"]
    t.add_row("event → visible in feature_svc", str(v.get("n", 0)), f"{v.get('p50_ms', 0):.2f}",
              f"{v.get('p99_ms', 0):.2f}", f"{v['not_visible']} not visible in 5 s")
    notes = {"hit": f"right after its miss; hit ratio {out['cache']['hit'].get('hit_ratio', 0):.2f}", "miss": "",
             "noop": "the floor: a call that does nothing",
             "hit_pass": f"a pass of hits alone; hit ratio {out['cache']['hit_pass'].get('hit_ratio', 0):.2f}",
             "noop_pass": "the floor, beside that pass"}
    for name, label in (("miss", "Recommend, cache miss"), ("hit", "Recommend, cache hit"),
                        ("noop", "health Check, same channel"), ("hit_pass", "Recommend, cache hit"),
                        ("noop_pass", "health Check, same channel")):
        c = out["cache"][name]
        t.add_row(label, str(c["n"]), f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", notes[name])
    for name in ("on", "off"):
        e = out["exposures"][name]
        t.add_row(f"Recommend, exposure log {name}", str(e["n"]), f"{e['p50_ms']:.2f}", f"{e['p99_ms']:.2f}", "miss")
    for name, r in runs.items():
        change = ""
        for suffix, what in (("", "vs quiet"), ("_vs_control", "vs control")):
            if f"p99_change{suffix}_pct" in r:
                lo, hi = r[f"p99_change{suffix}_ci_pct"]
                change += f"; p99 {what} {r[f'p99_change{suffix}_pct']:+.1f}% (90% CI {lo:+.1f}..{hi:+.1f})"
        t.add_row(f"Recommend, {name}", str(r["n"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                  f"{r['events_per_s_sent']:,.0f} events/s sent; {r['windows']} windows interleaved{change}")
    console.print(t)
    return out
