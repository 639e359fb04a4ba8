"""Full runs through the official anthropic SDK against podcrew's simulated Messages API.

Every LLM call of the stack goes over loopback to the simulator, which keeps its own log of
what it received: the tests count requests there, not in podcrew.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable

pytestmark = pytest.mark.integration

QUESTION = "How do Python generators and iterators work?"


def _stack(make_stack: Any, **env: str) -> Any:
    return make_stack(llm="simulated", env=env)


def _calls(stack: Any) -> list[dict[str, Any]]:
    return list(httpx.get(f"{stack.config.simulator_url}/_sim/calls").json())


def _faults(stack: Any, **faults: float) -> None:
    response = httpx.put(f"{stack.config.simulator_url}/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


def _run(stack: Any, question: str = QUESTION, wait: float = 60) -> dict[str, Any]:
    with httpx.Client(base_url=stack.config.api_url, timeout=wait + 10) as client:
        response = client.post(f"/v1/runs?wait={wait}", json={"question": question})
        assert response.status_code == 200, response.text
        return dict(response.json())


def test_full_run_usage_and_cost_add_up_to_what_the_server_reported(make_stack: Any) -> None:
    stack = _stack(make_stack)
    run = _run(stack)
    assert run["status"] == "succeeded", run
    calls = [c for c in _calls(stack) if c["status"] == 200]
    assert len(calls) == run["usage"]["llm_calls"]
    total = Usage()
    prices = PriceTable(DEFAULT_PRICES, ModelPrice(input=15, output=75))
    cost = 0.0
    for call in calls:
        usage = Usage(
            **{
                k: call["usage"].get(k) or 0
                for k in (
                    "input_tokens",
                    "output_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                )
            },
            llm_calls=1,
        )
        total += usage
        cost += prices.cost(call["model"], usage)
    got = Usage.model_validate(run["usage"])
    assert got.model_copy(update={"cost_usd": 0}) == total.model_copy(update={"cost_usd": 0})
    assert run["cost_usd"] == pytest.approx(cost, rel=1e-9)
    assert run["cost_usd"] > 0
    # prompt caching: the stable prefixes are written once, then read
    assert got.cache_read_input_tokens > 0 and got.cache_creation_input_tokens > 0
    # the writer streamed, the planner and researchers used tools
    assert any(c["stream"] for c in calls)
    assert {c["model"] for c in calls} == {"claude-haiku-4-5", "claude-sonnet-4-5"}


def test_writer_deltas_arrive_in_order_through_the_sdk_stream(make_stack: Any) -> None:
    # ~100 chunks over ~0.5 s: several of the pipeline's 50 ms batches even on a busy machine.
    stack = _stack(make_stack, PODCREW_SIM_STREAM_CHUNK_DELAY_S="0.005")
    with httpx.Client(base_url=stack.config.api_url, timeout=60) as client:
        run_id = client.post("/v1/runs", json={"question": QUESTION}).json()["id"]
        with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
            events = list(source.iter_sse())
        run = client.get(f"/v1/runs/{run_id}").json()
    deltas = [json.loads(e.data)["text"] for e in events if e.event == "writer.delta"]
    assert len(deltas) > 3
    assert "".join(deltas) == run["result"]["report"]


def test_tier_selects_models_per_stage(make_stack: Any) -> None:
    stack = _stack(make_stack)
    with httpx.Client(base_url=stack.config.api_url, timeout=70) as client:
        response = client.post("/v1/runs?wait=60", json={"question": QUESTION, "tier": "premium"})
    assert response.json()["status"] == "succeeded"
    models = {c["model"] for c in _calls(stack)}
    assert models == {"claude-sonnet-4-5", "claude-opus-4-5"}


def test_rate_limits_are_retried_honouring_retry_after(make_stack: Any) -> None:
    stack = _stack(
        make_stack,
        PODCREW_SIM_SEED="3",
        PODCREW_LLM_RETRY_BUDGET="50",
        PODCREW_LLM_BREAKER_CONSECUTIVE_FAILURES="50",
        PODCREW_LLM_BREAKER_MIN_CALLS="1000",
    )
    _faults(stack, rate_429=0.3, retry_after_s=0.05)
    run = _run(stack)
    assert run["status"] == "succeeded", run
    calls = _calls(stack)
    limited = [c for c in calls if c["fault"] == "429"]
    assert limited, "the storm never hit"
    assert len(calls) == run["usage"]["llm_calls"] + len(limited)


def test_retry_budget_caps_total_attempts_and_fails_with_a_reason(make_stack: Any) -> None:
    stack = _stack(make_stack, PODCREW_LLM_RETRY_BUDGET="2", PODCREW_LLM_MAX_ATTEMPTS="5")
    _faults(stack, rate_529=1.0, retry_after_s=0.01)
    run = _run(stack)
    assert run["status"] == "failed"
    assert run["error"]["type"] == "retry-budget-exhausted"
    calls = _calls(stack)
    assert len(calls) == 3  # the plan call: 1 attempt + the budget of 2 retries
    assert {c["fault"] for c in calls} == {"529"}


def test_server_errors_are_retried_up_to_max_attempts_and_counted_per_status(
    make_stack: Any,
) -> None:
    stack = _stack(make_stack, PODCREW_LLM_RETRY_BUDGET="4", PODCREW_LLM_MAX_ATTEMPTS="3")
    _faults(stack, rate_500=1.0, retry_after_s=0.01)
    run = _run(stack)
    assert run["status"] == "failed" and run["error"]["type"] == "llm-server-error"
    assert len(_calls(stack)) == 3  # max_attempts for the plan call
    metrics = httpx.get(
        stack.services["worker-0"].health_url.removesuffix("/readyz") + "/metrics"
    ).text
    assert 'podcrew_llm_retries_total{reason="500"} 2.0' in metrics


def test_breaker_opens_fails_fast_then_recovers(make_stack: Any) -> None:
    stack = _stack(
        make_stack,
        PODCREW_LLM_MAX_ATTEMPTS="1",
        PODCREW_LLM_BREAKER_CONSECUTIVE_FAILURES="2",
        PODCREW_LLM_BREAKER_OPEN_S="2",
    )
    _faults(stack, rate_500=1.0)
    for _ in range(2):
        assert _run(stack)["error"]["type"] == "llm-server-error"
    assert len(_calls(stack)) == 2
    failed_fast = _run(stack)
    assert failed_fast["error"]["type"] == "circuit-open"
    assert len(_calls(stack)) == 2, "an open breaker must not call upstream"
    _faults(stack, rate_500=0.0)
    time.sleep(2.1)
    assert _run(stack)["status"] == "succeeded"


def test_llm_calls_never_outlive_the_run_deadline(make_stack: Any) -> None:
    # Every call would take 30 s; the run may take 2 s. The SDK's own defaults would wait
    # up to 10 minutes per attempt.
    stack = _stack(make_stack, PODCREW_SIM_LATENCY_S="30", PODCREW_SIM_TTFT_S="30")
    started = time.monotonic()
    with httpx.Client(base_url=stack.config.api_url, timeout=40) as client:
        response = client.post(
            "/v1/runs?wait=30", json={"question": QUESTION, "budget": {"deadline_s": 2}}
        )
    elapsed = time.monotonic() - started
    run = response.json()
    assert run["status"] == "failed"
    assert run["error"]["type"] in ("deadline-exceeded", "llm-timeout")
    assert elapsed < 2 + 3, f"the run outlived its 2 s deadline by {elapsed - 2:.1f} s"


def test_a_stream_error_reaches_the_sse_client_as_a_final_event(make_stack: Any) -> None:
    # Each research call makes two 1 s LLM calls in parallel with the others; 1.5 s after they
    # start, every research request has reached the server, so a fault switched on then hits
    # only the writer's streamed call, which drops its connection mid-stream.
    stack = _stack(make_stack, PODCREW_SIM_LATENCY_S="1.0", PODCREW_LLM_MAX_ATTEMPTS="1")
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post("/v1/runs", json={"question": QUESTION}).json()["id"]
        seen: list[str] = []
        with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
            for sse in source.iter_sse():
                seen.append(sse.event)
                if sse.event == "research.started" and seen.count("research.started") == 1:
                    time.sleep(1.5)
                    _faults(stack, rate_drop=1.0)
        # The loop ended by itself: the server closed the stream after the final event.
    assert seen[-1] == "run.failed"
    assert "writer.started" in seen
    run = httpx.get(f"{stack.config.api_url}/v1/runs/{run_id}").json()
    assert run["status"] == "failed"
    assert "writer" in run["error"]["detail"] or run["error"]["type"].startswith("llm")
    streamed = [c for c in _calls(stack) if c["stream"]]
    assert [c["fault"] for c in streamed] == ["drop"]
