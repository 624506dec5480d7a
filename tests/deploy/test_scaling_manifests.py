"""The sizing values files (issue 13, docs/scaling.md): k8s/helm/recsys/sizes/<size>.yaml lint and validate
like the rest, their autoscaling bounds follow from sizes/capacity.yaml's measured CPU per Recommend, the
largest size's pods carry its peak at the target utilization, and the doc's table names the same pods."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import CHART, helm, render_chart, validate  # noqa: E402

SIZES = CHART / "sizes"
CAPACITY = yaml.safe_load((SIZES / "capacity.yaml").read_text())
COMPONENTS = ("ranker", "candidate", "feature")
DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def _values(size: str) -> dict:
    return yaml.safe_load((SIZES / f"{size}.yaml").read_text())


def _pods_for(rps: int, component: str) -> int:
    svc = CAPACITY["services"][component]
    util = CAPACITY["target_cpu_utilization_percent"] / 100
    return math.ceil(rps * svc["cpu_ms_per_request"] / 1000 / (svc["cores_per_pod"] * util))


@pytest.mark.parametrize("size", sorted(CAPACITY["sizes"]))
def test_size_lints_and_validates(size):
    values = _values(size)
    for kube_version in ("v1.29.0", "v1.33.0"):
        report = helm().lint(str(CHART), values, strict=True, kube_version=kube_version)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, f"helm lint --strict ({size}, {kube_version}): {problems}"
    errors = validate(render_chart(values), f"sizes/{size}.yaml")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("size", sorted(CAPACITY["sizes"]))
def test_autoscaling_follows_the_measured_capacity(size):
    rps = CAPACITY["sizes"][size]
    docs = render_chart(_values(size))
    hpas = {d["metadata"]["name"].rsplit("-", 1)[1]: d["spec"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == set(COMPONENTS)
    for comp in COMPONENTS:
        need = _pods_for(rps, comp)
        spec = hpas[comp]
        assert spec["maxReplicas"] == math.ceil(need * CAPACITY["max_headroom"]), comp
        assert spec["minReplicas"] == max(3, math.ceil(need * CAPACITY["min_fraction"])), comp
        # the peak fits under maxReplicas at the target utilization
        util = CAPACITY["target_cpu_utilization_percent"] / 100
        per_pod = 1000 / CAPACITY["services"][comp]["cpu_ms_per_request"] * util
        assert spec["maxReplicas"] * per_pod >= rps, comp
        target = spec["metrics"][0]["resource"]["target"]["averageUtilization"]
        assert target == CAPACITY["target_cpu_utilization_percent"]
        dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(f"-{comp}"))
        cpu = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        assert cpu == CAPACITY["services"][comp]["cpu_request"], comp


def test_the_doc_lists_the_same_pods():
    """docs/scaling.md's sizing table: one row per size with each service's peak pods."""
    text = DOC.read_text()
    for size, rps in CAPACITY["sizes"].items():
        row = next((line for line in text.splitlines() if line.startswith(f"| {rps:,} ")), None)
        assert row, f"docs/scaling.md has no row for {rps:,} Recommend/s"
        cells = [c.strip() for c in row.strip("|").split("|")]
        numbers = [int(re.sub(r"[^0-9]", "", c)) for c in cells[1:4]]
        assert numbers == [_pods_for(rps, c) for c in COMPONENTS], f"{size}: {row}"
