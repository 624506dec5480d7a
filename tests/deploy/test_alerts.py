"""Prometheus rules (promtool check + unit tests, one firing and one quiet case per alert), runbook links,
the Alertmanager routing example (amtool) and the example Prometheus configuration."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import DOCS, MONITORING, RULES, RULES_TESTS, run, tool  # noqa: E402

ALERTMANAGER = MONITORING / "alertmanager" / "alertmanager.yaml"
SEVERITIES = {"critical", "warning"}


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_promtool_check_rules():
    proc = run([tool("promtool"), "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests():
    # 12 s on a quiet 2-core machine; a loaded CI runner has taken over a minute
    proc = run([tool("promtool"), "test", "rules", RULES_TESTS.name], cwd=RULES_TESTS.parent, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """Guard: the same tests against rules with a raised threshold must fail."""
    broken = RULES.read_text().replace(") > 0.01\n", ") > 0.5\n")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULES_TESTS.name).write_text(RULES_TESTS.read_text())
    proc = run([tool("promtool"), "test", "rules", RULES_TESTS.name], cwd=tmp_path)
    assert proc.returncode != 0 and "RecsysRecommendErrorRatioHigh" in proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), f"alerts never shown firing: {names - firing}"
    assert names - quiet == set(), f"alerts never shown not firing: {names - quiet}"
    assert (firing | quiet) <= names, f"tests for unknown alerts: {(firing | quiet) - names}"


def _anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text)))
    return anchors


def test_alerts_have_severity_summary_and_a_runbook_section():
    anchors = _anchors(DOCS.read_text())
    bases = set()
    for alert in _alerts():
        name = alert["alert"]
        assert alert["labels"].get("severity") in SEVERITIES, name
        assert alert["labels"].get("team") == "recsys", name
        ann = alert["annotations"]
        assert ann.get("summary") and ann.get("description"), name
        url = ann.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        bases.add(base)
        assert base.endswith("docs/operations.md"), f"{name}: {url}"
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor!r}"
        assert anchor in anchors, f"{name}: docs/operations.md has no section '### {name}'"
    assert len(bases) == 1, f"runbook links use several bases: {bases}"


def test_alertmanager_config_is_valid_and_routes():
    amtool = tool("amtool")
    proc = run([amtool, "check-config", str(ALERTMANAGER)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cases = {
        ("team=recsys", "severity=critical", "namespace=recsys", "alertname=RecsysServiceDown"):
            "recsys-pager,recsys-ticket",
        ("team=recsys", "severity=critical", "namespace=recsys-dev", "alertname=RecsysServiceDown"): "recsys-dev",
        ("team=recsys", "severity=warning", "namespace=recsys", "alertname=RecsysModelStale"): "recsys-ml",
        ("team=recsys", "severity=warning", "namespace=recsys", "alertname=RecsysTargetDown"): "recsys-ticket",
        # Event stream (issue 9): a failing Feedback/Send pages; consumer and cache alerts go to the team channel.
        ("team=recsys", "severity=critical", "namespace=recsys", "alertname=RecsysFeedbackSendFailing"):
            "recsys-pager,recsys-ticket",
        ("team=recsys", "severity=warning", "namespace=recsys", "alertname=RecsysStreamConsumerLagHigh"):
            "recsys-ticket",
        ("team=recsys", "severity=warning", "namespace=recsys", "alertname=RecsysEventVisibleLatencyHigh"):
            "recsys-ticket",
        ("team=payments", "severity=critical"): "default",
    }
    for labels, receivers in cases.items():
        proc = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == receivers, f"{labels}: {proc.stdout.strip()} != {receivers}"


def test_every_alert_reaches_a_recsys_receiver():
    amtool = tool("amtool")
    for alert in _alerts():
        labels = [f"{k}={v}" for k, v in alert["labels"].items()] + [f"alertname={alert['alert']}", "namespace=recsys"]
        proc = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
        assert proc.returncode == 0 and proc.stdout.strip().startswith("recsys-"), (alert["alert"], proc.stdout)


def test_example_prometheus_config(tmp_path):
    """prometheus/prometheus.yml with its rule file. Debian's Prometheus is built without Kubernetes
    service discovery, so the discovery block is swapped for a static target; relabeling and rule
    files are checked as written."""
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    relabel = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"job", "namespace", "pod"} <= relabel
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:9101"]}]
    config["rule_files"] = [str((MONITORING / "prometheus" / p).resolve()) for p in config["rule_files"]]
    assert Path(config["rule_files"][0]) == RULES.resolve()
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = run([tool("promtool"), "check", "config", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
