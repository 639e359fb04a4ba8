"""A research agent that fails for real, and what the worker does about it: the whole stack
as real processes, its model a Messages API of the test's own that answers as the case
needs (a refused request, findings that do not validate, an overloaded provider).

What cannot pass (the provider refused the request, the model's output is invalid, the
budget is spent) is asked once per sub-question, and the run's ledger is charged once for
each; what can pass (an overloaded provider) is asked again, within the run's retry
budget. Either way the run reports what the agent said, not a generic upstream error."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig
from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings

pytestmark = pytest.mark.integration

SUB_QUESTIONS = ["How do generators yield values?", "How does send() resume a generator?"]
PLAN_USAGE = {"input_tokens": 100, "output_tokens": 10}  # 110 tokens
LOOP_USAGE = {"input_tokens": 300, "output_tokens": 40}  # 340 tokens per research call
RETRY_BUDGET = 2  # the run's: one retry per sub-question


class MessagesAPI(BaseHTTPRequestHandler):
    """`POST /v1/messages` as the case (`server.case`) wants it: plans are always made;
    research calls fail as the case says."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        tools = [tool["name"] for tool in body.get("tools", [])]
        if "kb_search" not in tools:  # the planner, forced to its tool
            plan = {"sub_questions": SUB_QUESTIONS}
            self._message(body, body["tool_choice"]["name"], plan, PLAN_USAGE)
            return
        case = self.server.case  # type: ignore[attr-defined]
        if case == "overloaded":
            self._error(529, "overloaded_error", "Overloaded")
        elif case == "invalid":
            self._message(body, "submit_findings", {"findings": "none"}, LOOP_USAGE)
        elif len(body["messages"]) == 1:  # "rejected": a search first, spent for real
            self._message(body, "kb_search", {"query": "generators"}, LOOP_USAGE)
        else:
            self._error(400, "invalid_request_error", "prompt is too long")

    def _message(
        self, body: dict[str, Any], tool: str, tool_input: Any, usage: dict[str, int]
    ) -> None:
        self._send(
            200,
            {
                "id": f"msg_{uuid.uuid4().hex}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": tool, "input": tool_input}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": usage,
            },
        )

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send(status, {"type": "error", "error": {"type": kind, "message": message}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def model() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((LOOPBACK, 0), MessagesAPI)
    server.case = "rejected"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(model: ThreadingHTTPServer) -> Iterator[Stack]:
    """The stack of this module (the `runs` fixture's): its model is `model`."""
    url = f"http://{LOOPBACK}:{model.server_address[1]}"
    env = {
        "PODCREW_LLM_PROVIDER": "simulated",
        "PODCREW_LLM_SIMULATOR_URL": url,
        # The agent does not retry its own LLM calls here: every retry is the worker's.
        "PODCREW_LLM_MAX_ATTEMPTS": "1",
        "PODCREW_LLM_RETRY_BUDGET": str(RETRY_BUDGET),
        "PODCREW_LLM_BREAKER_CONSECUTIVE_FAILURES": "1000",
        "PODCREW_LLM_BREAKER_MIN_CALLS": "1000",
        "PODCREW_ORCHESTRATOR_RESULT_CACHE_TTL_S": "0",
    }
    with Stack(StackConfig.on_free_ports(env=env)) as stack:
        yield stack


def _research_requests(stack: Stack) -> float:
    """Research requests the agent has served, as its own metrics count them."""
    text = httpx.get(f"http://{LOOPBACK}:{stack.config.research_port}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "podcrew_http_server_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("route") == "/v1/research"
    )


def _tokens_charged(stack: Stack, run_id: str) -> int:
    async def read() -> int:
        redis = create_redis(RedisSettings(url=SecretStr(stack.config.redis_url)))
        try:
            limits = BudgetLimits(
                run_id=run_id,
                tenant="default",
                max_tokens=1,
                max_cost_usd=1,
                tenant_daily_tokens=1,
                tenant_daily_cost_usd=1,
                global_daily_cost_usd=1,
            )
            run, _, _ = await Ledger(redis, "podcrew").spent(limits)
            return run.tokens
        finally:
            await redis.aclose()

    return asyncio.run(read())


def _run(
    runs: Any, stack: Stack, model: ThreadingHTTPServer, case: str, **body: Any
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    model.case = case  # type: ignore[attr-defined]
    before = _research_requests(stack)
    run_id = runs.submit(f"How do Python generators work? ({case})", max_subquestions=2, **body)
    run = runs.wait_final(run_id)
    finished = [e["data"] for e in runs.events(run_id) if e["event"] == "research.finished"]
    return run, _research_requests(stack) - before, finished


@pytest.mark.parametrize(
    ("case", "slug"), [("rejected", "llm-rejected"), ("invalid", "invalid-model-output")]
)
def test_a_research_failure_that_cannot_pass_is_asked_once_and_charged_once(
    runs: Any, stack: Stack, model: ThreadingHTTPServer, case: str, slug: str
) -> None:
    run, requests, finished = _run(runs, stack, model, case)

    assert requests == len(SUB_QUESTIONS)  # one request per sub-question: no retry
    assert run["status"] == "failed"
    assert run["error"]["type"] == "nothing-researched"
    assert [f["error"] for f in finished] == [slug, slug]  # what the agent said, kept
    # The plan, then one research loop's spend per sub-question.
    plan, loop = sum(PLAN_USAGE.values()), sum(LOOP_USAGE.values())
    assert _tokens_charged(stack, run["id"]) == plan + len(SUB_QUESTIONS) * loop


def test_a_spent_budget_in_an_agent_fails_the_run_as_budget_exceeded(
    runs: Any, stack: Stack, model: ThreadingHTTPServer
) -> None:
    # The plan alone spends more than the run may: each agent refuses its research.
    run, requests, finished = _run(runs, stack, model, "rejected", budget={"max_tokens": 50})

    assert run["status"] == "failed"
    assert run["error"]["type"] == "budget-exceeded"
    assert [f["error"] for f in finished] == ["budget-exceeded"] * 2
    assert requests == len(SUB_QUESTIONS)
    assert _tokens_charged(stack, run["id"]) == sum(PLAN_USAGE.values())


def test_an_overloaded_provider_is_asked_again_within_the_runs_retry_budget(
    runs: Any, stack: Stack, model: ThreadingHTTPServer
) -> None:
    run, requests, finished = _run(runs, stack, model, "overloaded")

    # Each sub-question's share of the run's budget is one retry: two requests each.
    share = RETRY_BUDGET // len(SUB_QUESTIONS)
    assert requests == len(SUB_QUESTIONS) * (1 + share)
    assert run["status"] == "failed"
    assert [f["error"] for f in finished] == ["llm-overloaded"] * 2
