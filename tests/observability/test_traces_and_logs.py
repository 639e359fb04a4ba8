"""One trace per run across api → worker → research agents → writer, and every log line of
the run carrying its run id and trace id.

The stack exports to an in-process OTLP/HTTP receiver (`conftest.otlp`), configured only by
the standard `OTEL_*` variables, as a deployment would configure it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from podcrew_cli.stack import Stack

pytestmark = pytest.mark.integration

SERVICES = {"orchestrator-api", "orchestrator-worker", "research-agent", "writer-agent"}
SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 2, 3
STATUS_ERROR = 2


def _wait_for_trace(otlp: Any, trace_id: str, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """Spans of the trace once every service has exported its part (batches every 200 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = otlp.trace(trace_id)
        names = {s["name"] for s in spans}
        if {s["service"] for s in spans} >= SERVICES and "invoke_agent orchestrator" in names:
            time.sleep(0.5)  # the last batch of the slowest exporter
            return otlp.trace(trace_id)
        if time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def test_one_trace_spans_api_worker_research_agents_and_writer(load: Any, otlp: Any) -> None:
    run = load.traced_run
    assert run["status"] == "succeeded", run
    trace_id = run["trace_id"]
    assert trace_id and len(trace_id) == 32, run

    spans = _wait_for_trace(otlp, trace_id)
    by_id = {s["span_id"]: s for s in spans}
    services = {s["service"] for s in spans}
    assert services == SERVICES, sorted(services)

    # One root, the api's server span; every other span's parent is in the same trace.
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [(r["service"], r["name"], r["kind"]) for r in roots] == [
        ("orchestrator-api", "POST /v1/runs", SPAN_KIND_SERVER)
    ], roots
    orphans = [s for s in spans if s["parent_span_id"] and s["parent_span_id"] not in by_id]
    assert not orphans, orphans

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_span_id"]]

    # worker: its run span continues the context the api stored with the queue entry
    (worker_root,) = [s for s in spans if s["name"] == "invoke_agent orchestrator"]
    assert worker_root["service"] == "orchestrator-worker"
    assert parent(worker_root) is roots[0]
    assert worker_root["attributes"]["gen_ai.conversation.id"] == run["id"]
    assert worker_root["attributes"]["gen_ai.agent.name"] == "orchestrator"
    # the prompt sets the run used: on the run's span, and each agent's on its server span
    versions = run["prompt_version"].split(",")
    assert worker_root["attributes"]["podcrew.prompt_version"] == run["prompt_version"]

    # the planner's LLM call is a GenAI chat span under the worker's run span
    worker_chats = [
        s for s in spans if s["service"] == "orchestrator-worker" and s["name"].startswith("chat ")
    ]
    assert worker_chats and all(parent(s) is worker_root for s in worker_chats)

    # research: invoke_agent (client) → HTTP client span → the agent's server span
    research_servers = [
        s for s in spans if s["service"] == "research-agent" and s["kind"] == SPAN_KIND_SERVER
    ]
    assert len(research_servers) == len(run["sub_questions"]) >= 2
    for server in research_servers:
        assert server["name"] == "POST /v1/research"
        assert server["attributes"]["podcrew.prompt_version"] in versions
        http_client = parent(server)
        assert http_client["service"] == "orchestrator-worker"
        assert http_client["kind"] == SPAN_KIND_CLIENT
        invoke = parent(http_client)
        assert invoke["name"] == "invoke_agent research-agent"
        assert invoke["kind"] == SPAN_KIND_CLIENT
        assert parent(invoke) is worker_root
        children = [s for s in spans if s["parent_span_id"] == server["span_id"]]
        names = Counter(s["name"].split(" ")[0] for s in children)
        assert names["chat"] >= 1 and names["execute_tool"] >= 1, names

    # writer: the same chain, then the streamed chat span
    (writer_server,) = [
        s for s in spans if s["service"] == "writer-agent" and s["kind"] == SPAN_KIND_SERVER
    ]
    assert writer_server["name"] == "POST /v1/write/stream"
    assert writer_server["attributes"]["podcrew.prompt_version"] in versions
    assert [v.split(":")[0] for v in versions] == ["planner", "research", "writer"]
    assert parent(parent(writer_server))["name"] == "invoke_agent writer-agent"
    assert parent(parent(parent(writer_server))) is worker_root
    (writer_chat,) = [
        s for s in spans if parent_is(s, writer_server) and s["name"].startswith("chat")
    ]
    assert writer_chat["attributes"]["podcrew.llm.streaming"] is True

    # GenAI attributes, as the semantic conventions name them
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert len(chats) == run["usage"]["llm_calls"]
    for chat in chats:
        a = chat["attributes"]
        assert chat["kind"] == SPAN_KIND_CLIENT
        assert chat["name"] == f"chat {a['gen_ai.request.model']}"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "anthropic"
        assert "gen_ai.system" not in a  # deprecated for gen_ai.provider.name
        assert a["gen_ai.conversation.id"] == run["id"]
        assert a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] in (["end_turn"], ["tool_use"])
        assert "gen_ai.input.messages" not in a  # message content is off by default
    total_in = sum(c["attributes"]["gen_ai.usage.input_tokens"] for c in chats)
    usage = run["usage"]
    assert total_in == (
        usage["input_tokens"]
        + usage["cache_read_input_tokens"]
        + usage["cache_creation_input_tokens"]
    )
    assert (
        sum(c["attributes"]["gen_ai.usage.output_tokens"] for c in chats) == usage["output_tokens"]
    )
    tools = [s for s in spans if s["name"].startswith("execute_tool ")]
    assert tools
    for tool in tools:
        a = tool["attributes"]
        assert tool["name"] == f"execute_tool {a['gen_ai.tool.name']}"
        assert a["gen_ai.operation.name"] == "execute_tool"
        assert a["gen_ai.tool.call.id"]
        assert a["gen_ai.conversation.id"] == run["id"]


def parent_is(span: dict[str, Any], other: dict[str, Any]) -> bool:
    return bool(span["parent_span_id"] == other["span_id"])


def _log_lines(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for name in ("api", "worker-0", "research-agent", "writer-agent"):
        path = stack.data_dir / f"{name}.log"
        parsed = []
        for raw in path.read_text().splitlines():
            if raw.startswith("{"):
                parsed.append(json.loads(raw))
        lines[name] = parsed
    return lines


def test_every_log_line_of_a_run_carries_its_run_id_and_trace_id(load: Any, stack: Stack) -> None:
    runs = {r["id"]: r for r in load.runs}
    lines = _log_lines(stack)
    seen: Counter[str] = Counter()
    for process, entries in lines.items():
        for line in entries:
            assert {"timestamp", "level", "service", "event"} <= line.keys(), line
            run_id = line.get("run_id")
            if run_id is None:
                continue
            assert len(line.get("trace_id", "")) == 32, (process, line)
            assert len(line.get("span_id", "")) == 16, (process, line)
            if run_id.startswith("probe_"):  # the agents called directly (conftest)
                continue
            assert line["trace_id"] == runs[run_id]["trace_id"], (process, line)
            seen[process] += 1
    # every process wrote lines for the runs (llm_call, research_finished, run_audit, ...)
    assert all(seen[p] for p in lines), seen

    # exactly one audit line per run, from whichever process ended it
    audits = [
        line for entries in lines.values() for line in entries if line["event"] == "run_audit"
    ]
    assert Counter(a["run_id"] for a in audits) == Counter(list(runs)), audits
    traced = next(a for a in audits if a["run_id"] == load.traced_run["id"])
    run = load.traced_run
    assert traced["status"] == "succeeded" and traced["tenant"] == run["tenant"]
    assert (
        traced["total_tokens"]
        == run["usage"]["input_tokens"]
        + run["usage"]["output_tokens"]
        + run["usage"]["cache_read_input_tokens"]
        + run["usage"]["cache_creation_input_tokens"]
    )
    assert traced["cost_usd"] == pytest.approx(run["cost_usd"], abs=1e-6)
    assert traced["llm_calls"] == run["usage"]["llm_calls"]
    assert traced["tools"] and traced["tool_calls"] == sum(traced["tools"].values())
    assert traced["duration_s"] > 0
    cached = [a for a in audits if a["cached"]]
    assert cached and cached[0]["status"] == "succeeded" and cached[0]["total_tokens"] == 0
