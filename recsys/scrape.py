"""A service's Prometheus metrics, read over HTTP (the bench, the simulation's checks, tests)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def mean_by_label(samples: dict, metric: str, label: str) -> dict[str, float]:
    """Mean of a histogram per value of `label`, in milliseconds."""
    sums = {dict(k[1])[label]: v for k, v in samples.items() if k[0] == f"{metric}_sum" and label in dict(k[1])}
    counts = {dict(k[1])[label]: v for k, v in samples.items() if k[0] == f"{metric}_count" and label in dict(k[1])}
    return {key: 1000.0 * sums[key] / counts[key] for key in sums if counts.get(key)}


def mean_by_label_since(before: dict, after: dict, metric: str, label: str) -> dict[str, float]:
    """Mean of a histogram per value of `label` over the observations made between two scrapes, in ms."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()
             if k[0] in (f"{metric}_sum", f"{metric}_count")}
    return mean_by_label(delta, metric, label)
