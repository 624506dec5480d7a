"""The metrics contract: every metric the alert rules and the Grafana dashboard use exists in the
/metrics of the real services (started by the `cluster` fixture), with the labels and label values
the queries select on. Names that come from Prometheus itself or kube-state-metrics are allow-listed.
The traffic includes Feedback/Send events (issue 9), so the stream consumers' series exist as well."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import DASHBOARD, RULES  # noqa: E402

pytestmark = pytest.mark.integration

# Not exposed by the services: Prometheus' own `up`, kube-state-metrics for the retraining jobs.
EXTERNAL = {"up", "kube_job_status_failed", "kube_job_status_succeeded", "kube_job_status_start_time",
            "kube_cronjob_status_last_successful_time"}
# What the services must expose (issue #4), including the two the rules/dashboard add:
# recsys_model_quality (validation metrics of the served bundle) and recsys_model_reloads_total (hot swaps).
EXPECTED = {
    "all": {"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds",
            "recsys_model_info", "recsys_model_bundle_created_timestamp_seconds", "recsys_model_reloads_total",
            "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"},
    "ranker_svc": {"recsys_stage_duration_seconds", "recsys_recommendations_total", "recsys_model_quality",
                   # issue 9: Feedback/Send, the exposure log, the per-user cache
                   "recsys_feedback_events_total", "recsys_stream_append_failures_total", "recsys_exposures_total",
                   "recsys_exposures_dropped_total", "recsys_cache_requests_total",
                   "recsys_cache_invalidations_total",
                   # issue 12: online CTR by model version (RecsysPromotedModelCtrDrop, the dashboard)
                   "recsys_model_stream_impressions_total", "recsys_model_clicks_total",
                   "recsys_model_conversions_total"},
    "candidate_svc": {"recsys_candidates_total"},
    "feature_svc": {"recsys_feature_last_update_timestamp_seconds", "recsys_feature_events_total"},
}
# The stream consumers (issue 9): each of these services runs consumer groups and must emit, per group,
# samples of these (not just declare them): features@<version> in feature_svc, items@<version> in
# candidate_svc. The ranker's cache@<replica> group exists with an in-process cache only.
CONSUMER_METRICS = ("recsys_stream_consumer_lag", "recsys_stream_consumer_applied_total",
                    "recsys_event_visible_seconds_count")
CONSUMER_GROUPS = {"feature_svc": r"features@.+", "candidate_svc": r"items@.+"}
# The latency objectives of the event-visible alert (1 s features, 5 s items) must be bucket bounds.
VISIBLE_BOUNDS = {"1.0", "5.0"}
STAGES = {"fetch_user", "retrieve", "fetch_items", "featurize", "score", "diversify"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, label matchers, ranges, grouping labels and
    function names removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_WORDS or ":" in name:  # functions, keywords, recording rules
            continue
        names.add(name)
    return names


def rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    # label_values(<selector>, <label>): only the selector names a metric.
    exprs += [re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["definition"])
              for v in dash["templating"]["list"] if v.get("definition")]
    return exprs


def _family(sample_name: str, families: set[str]) -> str | None:
    for suffix in ("", "_bucket", "_sum", "_count", "_total", "_created", "_info"):
        if sample_name.endswith(suffix) and (base := sample_name[: len(sample_name) - len(suffix)] if suffix
                                             else sample_name) in families:
            return base
    return None


def test_metric_name_extraction():
    assert metric_names('sum by (namespace, le) (rate(foo_bucket{job="a",x=~"b|c"}[5m])) > 0.25 and on (ns) '
                        'bar_total offset 5m / ignoring (outcome) group_left () baz{le="+Inf"}') \
        == {"foo_bucket", "bar_total", "baz"}
    assert metric_names("time() - max(recsys:x:rate5m) > 36 * 3600") == set()


def _scrape(svc) -> tuple[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return text, {fam.name: fam for fam in text_string_to_metric_families(text)}


def _feedback(target: str, items: list[str], user: str, request_id: str) -> None:
    """Feedback/Send through the proto stubs: interactions (one sent twice: a duplicate; one a click on the
    answer `request_id` gave `user`, joined to its exposure per model version), a new item and an invalid
    event, so every outcome and both consumer groups get samples."""
    from recsys.v1 import feedback_pb2 as fpb
    from recsys.v1 import feedback_pb2_grpc as fpb_grpc

    def interaction(user, item, request_id=""):
        ev = fpb.FeedbackEvent(event_id=uuid.uuid4().hex, interaction=fpb.Interaction(
            user_id=user, item_id=item, type="click", request_id=request_id))
        ev.timestamp.GetCurrentTime()
        return ev

    events = [interaction(f"u{i % 5}", item) for i, item in enumerate(items[:10])]
    events.append(interaction(user, items[0], request_id))
    new_item = fpb.FeedbackEvent(event_id=uuid.uuid4().hex, item=fpb.ItemUpsert(
        item_id=f"contract-{uuid.uuid4().hex[:8]}", title="a new item", categories=["news"]))
    new_item.timestamp.GetCurrentTime()
    invalid = fpb.FeedbackEvent(event_id=uuid.uuid4().hex, interaction=fpb.Interaction(user_id="3", type="click"))
    with grpc.insecure_channel(target) as channel:
        stub = fpb_grpc.FeedbackStub(channel)
        first = stub.Send(fpb.SendRequest(events=[*events, new_item, invalid]), timeout=10)
        again = stub.Send(fpb.SendRequest(events=events[:1]), timeout=10)
    assert first.accepted == len(events) + 1 and len(first.rejected) == 1, first
    assert again.duplicates == 1, again


def _joined_clicks(families: dict) -> float:
    return sum(s.value for f in families.values() for s in f.samples if s.name == "recsys_model_clicks_total")


def _applied(families: dict, group_pattern: str) -> float:
    return sum(s.value for f in families.values() for s in f.samples
               if s.name == "recsys_stream_consumer_applied_total"
               and re.fullmatch(group_pattern, s.labels.get("group", "")))


@pytest.fixture(scope="module")
def scraped(cluster):
    """Send traffic (known and unknown users, a bad request, a repeated user for the cache, Feedback
    events), wait until the consumer groups applied events, then scrape the three services."""
    from recsys.client import RecommenderClient

    with RecommenderClient(cluster.target) as client:
        for i in range(20):
            client.recommend(str(i), 10)
        client.recommend("someone-never-seen", 5)
        client.recommend("3", 5, explain=True)
        # A known user twice: computed and cached, then a cache hit (cold-start answers are not cached).
        answer = client.recommend("u7", 10)
        items = [it.item_id for it in answer.items]
        client.recommend("u7", 10)
        with pytest.raises(grpc.RpcError) as bad:
            client.recommend("3", 0)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _feedback(cluster.target, items, "u7", answer.request_id)
    deadline = time.monotonic() + 30
    for name, pattern in CONSUMER_GROUPS.items():
        while _applied(_scrape(cluster.services[name])[1], pattern) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    while not _joined_clicks(_scrape(cluster.services["ranker_svc"])[1]) and time.monotonic() < deadline:
        time.sleep(0.2)  # the stream follower's join sends its counts every 0.5 s
    return {name: _scrape(svc) for name, svc in cluster.services.items()}


def _samples(scraped, service, name):
    fam = scraped[service][1]
    for f in fam.values():
        for s in f.samples:
            if s.name == name:
                yield s


def test_services_expose_the_expected_metrics(scraped):
    for service, (text, _) in scraped.items():
        declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        want = EXPECTED["all"] | EXPECTED[service]
        missing = {m for m in want if m not in declared and m.removesuffix("_total") not in declared}
        assert not missing, f"{service} does not expose {sorted(missing)}"


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_referenced_metric_exists(scraped, source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    referenced = set().union(*(metric_names(e) for e in exprs))
    assert referenced, "no metric found in the expressions"
    exposed: set[str] = set()
    for text, families in scraped.values():
        exposed |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        exposed |= {s.name for f in families.values() for s in f.samples}
    missing = sorted(n for n in referenced - EXTERNAL
                     if n not in exposed and _family(n, exposed) is None)
    assert not missing, f"{source} use metrics no service exposes: {missing}"
    unused_allowance = EXTERNAL & exposed
    assert not unused_allowance, f"allow-listed names are in fact exposed: {unused_allowance}"


def test_labels_and_values_the_queries_rely_on(scraped):
    handled = list(_samples(scraped, "ranker_svc", "grpc_server_handled_total"))
    rec = [s for s in handled if s.labels.get("grpc_service") == "recsys.v1.Recommender"
           and s.labels.get("grpc_method") == "Recommend"]
    codes = {s.labels["grpc_code"] for s in rec}
    # The rules match status codes by their UPPER_SNAKE names.
    assert {"OK", "INVALID_ARGUMENT"} <= codes, codes
    buckets = {s.labels["le"] for s in _samples(scraped, "ranker_svc", "grpc_server_handling_seconds_bucket")
               if s.labels.get("grpc_method") == "Recommend"}
    assert "0.25" in buckets, "the 250 ms objective must be a bucket boundary for an exact p99 alert"
    stages = {s.labels["stage"] for s in _samples(scraped, "ranker_svc", "recsys_stage_duration_seconds_count")}
    assert stages >= STAGES, stages
    outcomes = {s.labels["outcome"] for s in _samples(scraped, "ranker_svc", "recsys_recommendations_total")}
    assert {"ok", "cold_start"} <= outcomes, outcomes
    sources = {s.labels["source"] for s in _samples(scraped, "candidate_svc", "recsys_candidates_total")}
    assert sources & {"als", "i2i", "popular", "segment", "content"}, sources
    for service in scraped:
        info = list(_samples(scraped, service, "recsys_model_info"))
        assert info and all({"component", "version", "role"} <= set(s.labels) for s in info), service
        created = list(_samples(scraped, service, "recsys_model_bundle_created_timestamp_seconds"))
        assert created and all(s.value > 1e9 for s in created), service
    quality = list(_samples(scraped, "ranker_svc", "recsys_model_quality"))
    assert quality and {"component", "version", "metric"} <= set(quality[0].labels)
    fresh = list(_samples(scraped, "feature_svc", "recsys_feature_last_update_timestamp_seconds"))
    assert fresh and fresh[0].value > 1e9


def test_stream_labels_and_values_the_queries_rely_on(scraped):
    """ranker_svc's side of the event-stream alerts and panels (RecsysFeedbackSendFailing,
    RecsysExposuresDropped, RecsysCacheHitRatioCollapsed, the Feedback/exposure/cache panels)."""
    send = {s.labels["grpc_code"] for s in _samples(scraped, "ranker_svc", "grpc_server_handled_total")
            if s.labels.get("grpc_service") == "recsys.v1.Feedback" and s.labels.get("grpc_method") == "Send"}
    assert "OK" in send, f"ranker_svc: no grpc_server_handled_total for recsys.v1.Feedback/Send: {send}"
    outcomes = {s.labels["outcome"]: s.value for s in _samples(scraped, "ranker_svc", "recsys_feedback_events_total")}
    assert {"accepted", "duplicate", "rejected"} <= {o for o, v in outcomes.items() if v > 0}, outcomes
    exposures = [s.value for s in _samples(scraped, "ranker_svc", "recsys_exposures_total")]
    assert exposures and exposures[0] > 0, "ranker_svc logs no exposure (exposures defaults to on)"
    results = {s.labels["result"] for s in _samples(scraped, "ranker_svc", "recsys_cache_requests_total") if s.value}
    assert {"hit", "miss"} <= results, f"ranker_svc cache results {results}"
    assert results <= {"hit", "miss", "expired", "invalidated"}, results


@pytest.mark.parametrize("service", sorted(CONSUMER_GROUPS))
def test_consumer_groups_emit_their_series(scraped, service):
    """The consumer side (RecsysStreamConsumerLag*, RecsysStreamDeadLetters, RecsysEventVisibleLatencyHigh
    and the lag / applied / event-to-visible panels): after the Feedback events above, each service's
    groups report lag, applied entries and event-to-visible observations, with the objectives as bounds."""
    pattern = CONSUMER_GROUPS[service]
    for metric in CONSUMER_METRICS:
        groups = {s.labels.get("group", "") for s in _samples(scraped, service, metric)}
        assert any(re.fullmatch(pattern, g) for g in groups), f"{service}: no {metric}{{group=~{pattern!r}}}: {groups}"
    assert _applied(scraped[service][1], pattern) > 0, f"{service}: group {pattern} applied nothing in 30 s"
    bounds = {s.labels["le"] for s in _samples(scraped, service, "recsys_event_visible_seconds_bucket")}
    assert bounds >= VISIBLE_BOUNDS, f"{service}: the objectives must be bucket bounds, got {sorted(bounds)}"


def test_online_ctr_by_model_version(scraped):
    """RecsysPromotedModelCtrDrop and the CTR panel: without an experiments file the ranker's stream follower
    counts the items each model version showed and joins the click that names its answer's request_id."""
    versions = {s.labels["version"] for s in _samples(scraped, "ranker_svc", "recsys_model_info")
                if s.labels.get("component") == "ranker_svc"}
    shown = {s.labels["version"]: s.value
             for s in _samples(scraped, "ranker_svc", "recsys_model_stream_impressions_total")}
    clicks = {s.labels["version"]: s.value for s in _samples(scraped, "ranker_svc", "recsys_model_clicks_total")}
    assert set(shown) <= versions and any(v > 0 for v in shown.values()), shown
    assert clicks and set(clicks) <= set(shown) and sum(clicks.values()) >= 1, clicks
