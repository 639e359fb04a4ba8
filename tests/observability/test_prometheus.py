"""Every dashboard query and every rule, evaluated by a real Prometheus against the live
stack under load: each must parse and return data.

An expression that returns nothing under load is a defect (a wrong metric or label name, a
ratio whose numerator never exists), so "no data" fails here. Alert expressions are empty
while nothing is wrong: their inner expressions (below, without the threshold) must return
data instead, and the full expression must still evaluate.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podcrew"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RULES = CHART / "rules" / "podcrew.rules.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RATE_WINDOW = "1m"  # stands for $__rate_interval: the whole load fits in it
AGENTS = ("research-agent", "writer-agent")  # values of the agents dashboard's $agent

# What each alert watches, without its threshold: under load these must return data.
ALERT_INNER = {
    "PodcrewHighErrorRate": ["namespace_service:podcrew_http_server_requests_errors:ratio_rate5m"],
    "PodcrewRunsFailing": ["namespace:podcrew_runs_failed:ratio_rate15m"],
    "PodcrewRunLatencyHigh": ["namespace:podcrew_run_duration_seconds:p95_5m"],
    "PodcrewAgentLatencyHigh": [
        "histogram_quantile(0.95, sum by (namespace, service, le) (rate("
        'podcrew_http_server_request_duration_seconds_bucket{service=~".+-(research-agent|writer-agent)",'
        'route=~"/v1/.+"}[5m])))'
    ],
    "PodcrewLLMRateLimitSaturated": [
        'sum by (namespace, model) (rate(podcrew_llm_ratelimit_wait_seconds_bucket{le="1.0"}[10m]))'
        " / sum by (namespace, model) (rate(podcrew_llm_ratelimit_wait_seconds_count[10m]))"
    ],
    "PodcrewQueueAgeHigh": [
        'max by (namespace) (podcrew_queue_oldest_age_seconds{state="undelivered"})'
    ],
    "PodcrewRunQueueBacklog": ["max by (namespace) (podcrew_queue_lag_entries)"],
    "PodcrewCircuitBreakerOpen": [
        "max by (namespace, service, upstream) (podcrew_circuit_breaker_state)"
    ],
    "PodcrewDailySpendApproachingCap": ["namespace:podcrew_daily_spend_usd:ratio_cap"],
    "PodcrewDailySpendCapReached": ["namespace:podcrew_daily_spend_usd:ratio_cap"],
    "PodcrewNoWorkerConsuming": [
        "sum by (namespace) (rate(podcrew_http_server_requests_total"
        '{method="POST",route="/v1/runs",status=~"2.."}[10m]))',
        "sum by (namespace) (rate(podcrew_redis_command_duration_seconds_count"
        '{command="XREADGROUP"}[10m]))',
    ],
    "PodcrewShedding": ["sum by (namespace, service) (rate(podcrew_admission_rejected_total[5m]))"],
    "PodcrewSatisfactionDrop": [
        "namespace_prompt_version_tier:podcrew_run_feedback_positive:ratio_rate1h",
        "namespace_prompt_version_tier:podcrew_run_feedback:increase1h",
    ],
}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) with the dashboard variables substituted."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        variables = {v["name"] for v in board["templating"]["list"]}
        agents = AGENTS if "agent" in variables else ("",)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                for agent in agents:
                    expr = (
                        target["expr"]
                        .replace("$__rate_interval", RATE_WINDOW)
                        .replace("$namespace", "podcrew")
                        .replace("$agent", agent)
                    )
                    assert "$" not in expr, (path.name, panel["title"], expr)
                    title = f"{panel['title']} [{agent}]" if agent else panel["title"]
                    out.append((path.name, title, expr))
    return out


def test_promtool_accepts_the_rule_file(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rules_follow_the_conventions() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    alerts = [r for r in _rules() if "alert" in r]
    records = [r for r in _rules() if "record" in r]
    assert records and alerts
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record["record"]), record
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["for"], name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        url, _, anchor = annotations["runbook_url"].partition("#")
        assert url.endswith("/docs/runbooks.md") and anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"
    assert sorted(ALERT_INNER) == sorted(a["alert"] for a in alerts), "inner expressions"


def test_every_rule_and_alert_returns_data_under_load(load: Any, prometheus: Any) -> None:
    empty = []
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        prometheus.query(rule["expr"])  # the full expression parses and evaluates
        inner = [rule["expr"]] if "record" in rule else ALERT_INNER[name]
        empty += [(name, expr) for expr in inner if not prometheus.query(expr)]
    assert not empty, "no data: " + json.dumps(empty, indent=1)


def test_no_alert_fires_on_a_healthy_stack(load: Any, prometheus: Any) -> None:
    # The thresholds are not so tight that a healthy, lightly loaded stack trips them. Left
    # out: what the injected faults trip on purpose (errors, failed runs, open breakers).
    quiet = (
        "PodcrewCircuitBreakerOpen",
        "PodcrewHighErrorRate",
        "PodcrewRunsFailing",
        "PodcrewShedding",
    )
    for rule in _rules():
        if "alert" in rule and rule["alert"] not in quiet:
            assert not prometheus.query(rule["expr"]), rule["alert"]


def test_every_dashboard_query_returns_data_under_load(load: Any, prometheus: Any) -> None:
    queries = _panel_queries()
    assert {d for d, _, _ in queries} == {"overview.json", "agents.json", "cost.json"}
    empty = [(d, t, e) for d, t, e in queries if not prometheus.query(e)]
    assert not empty, f"{len(empty)} of {len(queries)} queries return no data: " + json.dumps(
        empty, indent=1
    )
    # the namespace variable's own query
    assert prometheus.query("count by (namespace) (podcrew_http_server_requests_total)")


def test_llm_metrics_follow_the_genai_conventions(load: Any, prometheus: Any) -> None:
    usage = prometheus.query("sum by (gen_ai_token_type) (gen_ai_client_token_usage_count)")
    assert {s["metric"]["gen_ai_token_type"] for s in usage} == {"input", "output"}
    labels = prometheus.query("gen_ai_client_token_usage_sum")[0]["metric"]
    assert labels["gen_ai_operation_name"] == "chat"
    assert labels["gen_ai_provider_name"] == "anthropic"
    assert labels["gen_ai_request_model"] and labels["gen_ai_response_model"]
    errors = prometheus.query(
        'sum by (error_type) (gen_ai_client_operation_duration_seconds_count{error_type!=""})'
    )
    assert "500" in {s["metric"]["error_type"] for s in errors}
    # buckets reach LLM latencies: up to at least 300 s
    les = {
        float(s["metric"]["le"])
        for s in prometheus.query("gen_ai_client_operation_duration_seconds_bucket")
        if s["metric"]["le"] != "+Inf"
    }
    assert max(les) >= 300
    ttft = prometheus.query("sum(podcrew_llm_time_to_first_token_seconds_count)")
    assert float(ttft[0]["value"][1]) > 0


def test_every_hop_and_saturation_signal_is_measured(load: Any, prometheus: Any) -> None:
    def values(expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in prometheus.query(expr)}

    services = {f"podcrew-{c}" for c in ("api", "worker", "research-agent", "writer-agent")}
    # outbound: to both agents (the writer's SSE stream included), to Redis from every
    # process, to the LLM from every process that calls it
    calls = values('sum by (target) (podcrew_http_client_requests_total{outcome="ok"})', "target")
    assert calls.keys() == {"research-agent", "writer-agent"} and all(calls.values()), calls
    redis = values("sum by (service) (podcrew_redis_command_duration_seconds_count)", "service")
    assert redis.keys() == services, redis
    llm = values("sum by (service) (podcrew_llm_requests_total)", "service")
    assert llm.keys() == services - {"podcrew-api"}, llm
    # the queue's saturation signals
    ages = values("max by (state) (podcrew_queue_oldest_age_seconds)", "state")
    assert ages.keys() == {"undelivered", "pending"}, ages
    # the fault phase opened the agents' breakers (2 = open), and spend was counted
    opened = values(
        "max by (service) (max_over_time(podcrew_circuit_breaker_state[5m]))", "service"
    )
    assert opened["podcrew-research-agent"] == opened["podcrew-writer-agent"] == 2, opened
    assert values("max(podcrew_daily_spend_usd)", "")[""] > 0
    assert values("max(podcrew_daily_spend_cap_usd)", "")[""] == 500
    assert values('sum(podcrew_run_cost_usd_total{tier="standard"})', "")[""] > 0
    # runs by outcome (retries absorb most injected faults)
    runs = values("sum by (outcome) (podcrew_runs_finished_total)", "outcome")
    assert runs.get("succeeded", 0) > 0, runs


def _keda_latency_queries() -> dict[str, str]:
    """The agents' p95-latency trigger queries as the chart renders them for this release
    (KEDA mode), through Helm's own engine."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podcrew-helm-") as home:
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            os.environ.setdefault(var, str(Path(home) / var.lower()))
        import helm_python

        values = yaml.safe_load((CHART / "ci" / "keda-values.yaml").read_text())
        with helm_python.Chart.load(str(CHART)) as chart:
            rendered = chart.render(values, name="podcrew", namespace="podcrew", is_install=True)
    queries = {}
    for path, text in rendered.items():
        for doc in yaml.safe_load_all(text) if path.endswith("keda.yaml") else ():
            component = (doc or {}).get("metadata", {}).get("labels", {})
            name = component.get("app.kubernetes.io/component")
            for trigger in doc["spec"]["triggers"] if name in AGENTS else ():
                if trigger.get("name") == "p95-latency":
                    queries[name] = trigger["metadata"]["query"]
    return queries


def test_the_agents_latency_trigger_leaves_out_waits_for_the_rate_limiter(
    load: Any, prometheus: Any
) -> None:
    queries = _keda_latency_queries()
    assert set(queries) == set(AGENTS)
    for agent, query in queries.items():
        latency, gate = query.split(" unless on() (", 1)
        waited_share = gate.rsplit(" > ", 1)[0]
        # The gate's share is measured: the agents' LLM calls went through the limiter.
        share = prometheus.query(waited_share)
        assert share, agent
        triggered = prometheus.query(query)
        assert len(triggered) == 1, agent
        if float(share[0]["value"][1]) > 0.1:  # held back by the limiter: no reason to scale
            assert float(triggered[0]["value"][1]) == 0, agent
        else:  # the limits are far above the load: the trigger is the plain p95
            plain = float(prometheus.query(latency)[0]["value"][1])
            # Evaluated a moment apart, while the window slides: equal but for that moment.
            assert float(triggered[0]["value"][1]) == pytest.approx(plain, rel=0.05), agent
