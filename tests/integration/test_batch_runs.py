"""Batch runs out of the box: a run submitted with `priority: "batch"` and a deadline far
beyond the interactive cap is accepted with the server's defaults, sends its LLM calls as
Message Batches to podcrew's simulated Messages API, completes, and is priced at the batch
rate."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.pricing import BATCH_RATE, DEFAULT_PRICES, ModelPrice, PriceTable

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture(scope="module")
def batch_stack() -> Any:
    from podcrew_cli.stack import Stack, StackConfig

    config = StackConfig.on_free_ports(
        llm="simulated",
        env={
            # A batch ends a moment after it is created, and is polled soon after.
            "PODCREW_SIM_BATCH_LATENCY_S": "0.2",
            "PODCREW_LLM_BATCH_POLL_INITIAL_S": "0.1",
            "PODCREW_LLM_BATCH_POLL_MAX_S": "0.2",
        },
    )
    with Stack(config) as stack:
        yield stack


def _batched_calls(stack: Any) -> list[dict[str, Any]]:
    """Every request the simulator answered inside a Message Batch, as its result message."""
    sim = stack.config.simulator_url
    listing = httpx.get(f"{sim}/v1/messages/batches", params={"limit": 1000}).json()
    messages = []
    for batch in listing["data"]:
        lines = httpx.get(f"{sim}/v1/messages/batches/{batch['id']}/results").text
        for line in lines.splitlines():
            result = json.loads(line)["result"]
            assert result["type"] == "succeeded", result
            messages.append(result["message"])
    return messages


def test_a_batch_run_with_a_long_deadline_is_accepted_completes_and_costs_half(
    batch_stack: Any,
) -> None:
    body = {
        "question": "How do Python generators work?",
        "priority": "batch",
        "budget": {"deadline_s": 6 * HOUR},  # far past the interactive cap of 300 s
    }
    with httpx.Client(base_url=batch_stack.config.api_url, timeout=90) as client:
        accepted = client.post("/v1/runs", json=body)
        assert accepted.status_code == 202, accepted.text
        run = client.get(f"/v1/runs/{accepted.json()['id']}?wait=60").json()
        deadline = run["budget"]["deadline_s"]
        while run["status"] not in ("succeeded", "failed", "cancelled"):
            run = client.get(f"/v1/runs/{run['id']}").json()
    assert run["status"] == "succeeded", run
    assert deadline == 6 * HOUR
    messages = _batched_calls(batch_stack)
    assert len(messages) == run["usage"]["llm_calls"] > 0  # every call went as a batch
    prices = PriceTable(DEFAULT_PRICES, ModelPrice(input=15, output=75))
    full = sum(
        prices.cost(m["model"], Usage(**{k: m["usage"].get(k) or 0 for k in _TOKENS}))
        for m in messages
    )
    assert run["cost_usd"] == pytest.approx(full * BATCH_RATE, rel=1e-9)


_TOKENS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def test_a_batch_run_that_names_no_deadline_gets_the_batch_cap(batch_stack: Any) -> None:
    body = {"question": "What is a Python decorator?", "priority": "batch"}
    with httpx.Client(base_url=batch_stack.config.api_url, timeout=30) as client:
        accepted = client.post("/v1/runs", json=body)
        assert accepted.status_code == 202, accepted.text
        run = client.get(f"/v1/runs/{accepted.json()['id']}").json()
        client.delete(f"/v1/runs/{run['id']}")
    assert run["budget"]["deadline_s"] == 24 * HOUR


def test_interactive_runs_keep_their_cap(batch_stack: Any) -> None:
    body = {"question": "What is a Python set?", "budget": {"deadline_s": 6 * HOUR}}
    with httpx.Client(base_url=batch_stack.config.api_url, timeout=30) as client:
        run = client.post("/v1/runs?wait=60", json=body).json()
    assert run["budget"]["deadline_s"] == 300
    assert run["status"] == "succeeded", run
