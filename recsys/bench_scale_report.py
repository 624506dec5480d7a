"""Tables of the bench's catalog-scale section (recsys/bench_sweep.py's result)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

_PCTS = ("p50_ms", "p90_ms", "p99_ms", "max_ms")


def _ms(r: dict, key: str) -> str:
    v = r.get(key)
    return "—" if v is None or v != v else f"{v:.2f}"


def _table(title: str, cols: list[str]) -> Table:
    t = Table(title=title)
    for i, c in enumerate(cols):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def print_scale(out: dict, console: Console, items: int) -> None:
    for index, res in out.get("indexes", {}).items():
        t = _table(f"Recommend, single client, k = 10 · {items:,} items · {index} index · cluster (cache and "
                   f"exposures off) vs in-process floor, interleaved",
                   ["candidates", "cluster p50", "p90", "p99", "max", "floor p50", "p90", "p99", "max",
                    "cluster/floor p50", "errors"])
        for row in res["sweep"]:
            c, f = row["cluster"], row["floor"]
            t.add_row(str(row["n_candidates"]), *(_ms(c, k) for k in _PCTS), *(_ms(f, k) for k in _PCTS),
                      f"{row['cluster_over_floor_p50']:.2f}", f"{c['errors']}/{f['errors']}")
        console.print(t)
        last = res["sweep"][-1]
        st = _table(f"mean ms per stage and hop · {index} · {last['n_candidates']} candidates",
                    ["stage / hop", "as the ranker sees it", "server side", "serialization + transport",
                     "in-process floor"])
        for name, r in last["stages"].items():
            st.add_row(name, _ms(r, "ranker_ms"), _ms(r, "server_ms"), _ms(r, "hop_ms"), _ms(r, "floor_ms"))
        console.print(st)
        tp, mr = res.get("throughput", {}), res.get("max_rate", {})
        line = (f"{index}: throughput {tp.get('throughput_rps', 0):.0f} Recommend/s at {tp.get('concurrency')} in "
                f"flight (p50 {_ms(tp, 'p50_ms')}, p99 {_ms(tp, 'p99_ms')} ms, {tp.get('n_candidates')} candidates)")
        if mr:
            line += (f"; highest open-loop rate held with p99 ≤ {mr['p99_bound_ms']:.0f} ms: {mr['max_rps']:.0f}/s"
                     f" (first failed {mr['first_failed_rps'] or float('nan'):.0f}/s)")
        console.print(line, highlight=False)
        mt = _table(f"resident memory and start · {items:,} items · {index}",
                    ["process", "RSS at start MB", "RSS after the runs MB", "start (bundle load) s"])
        for name, mb in res["rss_mb"].items():
            mt.add_row(name, f"{mb:.0f}", f"{res['rss_mb_after'].get(name, float('nan')):.0f}",
                       f"{res['cluster_start_s']:.1f} (all three)")
        mt.add_row("in-process floor", "", "", f"{res['floor_load_s']:.1f}")
        console.print(mt)
    _print_peer(out.get("peer", {}), console)
    _print_production(out.get("production", {}), console)


def _print_peer(peer: dict, console: Console) -> None:
    if not peer:
        return
    if "skipped" in peer:
        console.print(f"Ray Serve peer: skipped ({peer['skipped']})")
        return
    t = _table("Ray Serve peer (3 deployments, handles, HTTP ingress) vs cluster vs floor, interleaved",
               ["candidates", "peer config", "peer p50", "p90", "p99", "max", "cluster p50", "floor p50",
                "cluster/peer p50", "peer start s"])
    for config, res in peer.items():
        if config == "fastest":
            continue
        if "error" in res:
            t.add_row("—", config, res["error"][:60], *[""] * 7)
            continue
        for row in res["sweep"]:
            p = row["peer"]
            t.add_row(str(row["n_candidates"]), config, *(_ms(p, k) for k in _PCTS), _ms(row["cluster"], "p50_ms"),
                      _ms(row["floor"], "p50_ms"), f"{row['cluster_over_peer_p50']:.2f}", f"{res['start_s']:.0f}")
    console.print(t)
    for n, best in peer.get("fastest", {}).items():
        console.print(f"{n} candidates: fastest peer {best['config']} p50 {best['peer_p50_ms']:.2f} ms; "
                      f"ours/peer {best['cluster_over_peer_p50']:.2f}", highlight=False)


def _print_production(prod: dict, console: Console) -> None:
    if not prod:
        return
    t = _table(f"production configuration beside the plain one · {prod['n_candidates']} candidates",
               ["path", "n", "p50", "p90", "p99", "max", "answers cached", "errors"])
    for name, label in (("plain", "plain (no TLS, no tracing, cache and exposures off)"),
                        ("miss", "production, cache miss"), ("hit", "production, cache hit")):
        r = prod[name]
        t.add_row(label, str(r.get("n", 0)), *(_ms(r, k) for k in _PCTS), f"{r['cached_share']:.0%}",
                  str(r["errors"]))
    console.print(t)
    console.print(f"production: {prod['setup']}; started in {prod['start_s']:.1f}s; RSS "
                  + ", ".join(f"{k} {v:.0f} MB" for k, v in prod["rss_mb"].items()), highlight=False)
