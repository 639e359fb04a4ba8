"""Observability fixtures: one traced stack under load, an in-process OTLP receiver and a
real Prometheus scraping the stack's services.

The stack runs the simulated Messages API (the real anthropic SDK path) with some faults
injected, so retries, errors, the breaker and time-to-first-token all produce data. One stack
and one Prometheus serve every test of the session: together they take well under a minute.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig, free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podcrew"
RULES_FILE = CHART / "rules" / "podcrew.rules.yaml"
NAMESPACE = "podcrew"
RELEASE = "podcrew"
# Components as the chart names their Services (`<fullname>-<component>`), which is what
# kube-prometheus-stack puts in the `service` and `job` labels of every scraped series.
COMPONENTS = ("api", "worker", "research-agent", "writer-agent")
SCRAPE_INTERVAL_S = 1
QUESTIONS = (
    "How do Python generators and iterators work?",
    "What does the asyncio event loop do?",
    "How does Python's import system find modules?",
)


# --- OTLP receiver -------------------------------------------------------------------------


@dataclass
class OTLPReceiver:
    """Accepts OTLP/HTTP protobuf trace exports on loopback and keeps every span."""

    url: str
    spans: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "service": resource.get("service.name", ""),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "scope": scope_spans.scope.name,
                            "attributes": {a.key: _any_value(a.value) for a in span.attributes},
                            "status": span.status.code,
                        }
                    )
        with self.lock:
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="session")
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(body)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    receiver.url = f"http://{LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- the stack under load -----------------------------------------------------------------


@dataclass
class Load:
    """What the load produced: the runs as the API returned them."""

    runs: list[dict[str, Any]]
    traced_run: dict[str, Any]


def _submit(client: httpx.Client, question: str, wait: float = 60) -> dict[str, Any]:
    response = client.post(f"/v1/runs?wait={wait}", json={"question": question})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="session")
def stack(otlp: OTLPReceiver) -> Iterator[Stack]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        # A short claim cycle keeps the worker's housekeeping loops busy during the load.
        "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": "10",
        "PODCREW_SIM_TTFT_S": "0.05",
        "PODCREW_SIM_LATENCY_S": "0.05",
        # The shared rate limiter, with limits the load stays under: its metrics exist (the
        # agents' latency trigger reads them) and the injected 429s pause it.
        "PODCREW_LLM_RATELIMIT_ENABLED": "true",
        "PODCREW_LLM_RATELIMIT_DEFAULT": json.dumps(
            {
                "requests_per_minute": 100_000,
                "input_tokens_per_minute": 100_000_000,
                "output_tokens_per_minute": 100_000_000,
            }
        ),
    }
    config = StackConfig.on_free_ports(llm="simulated", env=env)
    with Stack(config) as running:
        yield running


@pytest.fixture(scope="session")
def load(stack: Stack, prometheus: Prometheus) -> Load:
    """Runs with faults injected: some LLM calls get 429, 529 or 500 and are retried; one
    question is asked twice in sequence so the result cache answers it."""
    sim = stack.config.simulator_url
    with httpx.Client(base_url=stack.config.api_url, timeout=90) as client:
        traced = _submit(client, QUESTIONS[0])  # a clean run first: the trace test's run
        faults = {"rate_429": 0.08, "rate_529": 0.08, "rate_500": 0.04, "retry_after_s": 0.05}
        assert httpx.put(f"{sim}/_sim/faults", json=faults).status_code == 200
        questions = [f"{q} (variant {i})" for i in range(3) for q in QUESTIONS]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(questions)) as pool:
            runs = list(pool.map(lambda q: _submit(client, q), questions))
        assert httpx.put(f"{sim}/_sim/faults", json=dict.fromkeys(faults, 0.0)).status_code == 200
        runs.append(_submit(client, QUESTIONS[0]))  # answered from the result cache
        runs.append(traced)
        _give_feedback(client, runs)
    _fail_agents_directly(stack)
    # The gauges refreshed on a timer (queue metrics and today's spend, every 5 s) have
    # ticked since the load and been scraped.
    prometheus.wait_for("podcrew_queue_oldest_age_seconds", timeout_s=20)
    prometheus.wait_for("max(podcrew_daily_spend_usd) > 0", timeout_s=20)
    return Load(runs=runs, traced_run=traced)


def _give_feedback(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    """Users' feedback on every distinct run, one in four negative: both ratings' series and
    the satisfaction ratio exist, well clear of the alert's threshold and volume."""
    for index, run_id in enumerate(dict.fromkeys(run["id"] for run in runs)):
        score = -1 if index % 4 == 3 else 1
        response = client.post(f"/v1/runs/{run_id}/feedback", json={"score": score})
        assert response.status_code == 201, response.text


def _fail_agents_directly(stack: Stack) -> None:
    """Every LLM call fails (500) while each agent is called directly: each agent's error
    series, its 5xx answers and its breaker opening are then certain, not left to chance.
    Last, so that the breakers it opens cannot fail the load's runs."""
    sim = stack.config.simulator_url
    research = f"http://{LOOPBACK}:{stack.config.research_port}/v1/research"
    writer = f"http://{LOOPBACK}:{stack.config.writer_port}/v1/write"
    question = "How do Python generators work?"
    finding = {"claim": "Generators yield values lazily.", "source": {"id": "kb:x", "title": "x"}}
    write_body = {
        "run_id": "probe_writer",
        "question": question,
        "sections": [{"sub_question": question, "findings": [finding]}],
    }
    faults = {"rate_500": 1.0, "retry_after_s": 0.0}
    assert httpx.put(f"{sim}/_sim/faults", json=faults).status_code == 200
    try:
        with httpx.Client(timeout=30) as client:
            for attempt in range(2):
                body = {
                    "run_id": f"probe_research_{attempt}",
                    "question": question,
                    "sub_question": question,
                }
                assert client.post(research, json=body).status_code >= 500
            assert client.post(writer, json=write_body).status_code >= 500
            streamed = client.post(f"{writer}/stream", json=write_body)
            assert "event: error" in streamed.text, streamed.text
    finally:
        assert httpx.put(f"{sim}/_sim/faults", json={"rate_500": 0.0}).status_code == 200


# --- Prometheus ---------------------------------------------------------------------------


def prometheus_binaries() -> tuple[str, str]:
    """`prometheus` and `promtool` from PATH (Debian: `apt-get install prometheus`)."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found[0] or "", found[1] or ""
    pytest.fail(
        "prometheus/promtool not installed: apt-get install prometheus"
        " (scripts/ensure-test-deps.sh, which make test runs)"
    )


@pytest.fixture(scope="session")
def promtool() -> str:
    return prometheus_binaries()[1]


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)


def scrape_config(stack: Stack) -> dict[str, Any]:
    ports = {
        "api": stack.config.api_port,
        "worker": stack.config.worker_port,
        "research-agent": stack.config.research_port,
        "writer-agent": stack.config.writer_port,
    }
    jobs = []
    for component in COMPONENTS:
        name = f"{RELEASE}-{component}"
        jobs.append(
            {
                "job_name": name,
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                "static_configs": [
                    {
                        "targets": [f"{LOOPBACK}:{ports[component]}"],
                        # What a ServiceMonitor adds: the series look as they do in a cluster
                        # (the admission gauges' own `service` label becomes exported_service).
                        "labels": {
                            "namespace": NAMESPACE,
                            "service": name,
                            "pod": f"{name}-0",
                            "container": component,
                            "endpoint": "http",
                        },
                    }
                ],
            }
        )
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": jobs,
    }


@pytest.fixture(scope="session")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary, _ = prometheus_binaries()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(stack)))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    running = Prometheus(f"http://{LOOPBACK}:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{running.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus did not become ready")
            time.sleep(0.2)
        # Every target scraped once before the load starts, so rates have a baseline.
        running.wait_for(f'count(up{{namespace="{NAMESPACE}"}} == 1) == {len(COMPONENTS)}', 20)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
