"""The semantic cache on the real stack (the api with the semantic-cache extra, as the
workspace installs it): a rewording of a question the same tenant asked is answered at once
from the earlier run, marked and counted; another tenant's question and a thread turn are
not; a hit that names a callback is announced once; and an api with the cache off (the
default) never loads the model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import keyed_client, keyed_stack
from .test_webhooks import SECRET, Hooks

pytestmark = pytest.mark.integration

ACME, GLOBEX = "acme-key-0123456789", "globex-key-0123456789"
ASKED = "How do I handle exceptions in Python?"
REWORDED = "How does exception handling work in Python?"


@pytest.fixture(scope="module")
def cached_stack() -> Any:
    with keyed_stack(
        {ACME: "acme", GLOBEX: "globex"},
        PODCREW_ORCHESTRATOR_SEMANTIC_CACHE="true",
        PODCREW_WEBHOOK_SECRET=SECRET,
        PODCREW_WEBHOOK_ALLOW_PRIVATE="true",
        PODCREW_LLM_OFFLINE_LATENCY_S="0.05",
    ) as stack:
        yield stack


def _ask(client: httpx.Client, question: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/runs?wait=30", json={"question": question, **body})
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    assert run["status"] == "succeeded", run
    return run


def _semantic(client: httpx.Client, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'podcrew_cache_requests_total{{cache="semantic",outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def _loaded_model(stack: Any) -> bool:
    """Whether the api process has the embedding model's package mapped in memory."""
    pid = stack.services["api"].process.pid
    return "wordllama" in Path(f"/proc/{pid}/maps").read_text()


def test_a_rewording_is_answered_from_the_tenants_own_earlier_run(cached_stack: Any) -> None:
    unique = f" ({time.time_ns()})"  # the exact result cache must not be what answers
    with keyed_client(cached_stack, ACME) as acme, keyed_client(cached_stack, GLOBEX) as globex:
        source = _ask(acme, ASKED + unique)
        assert source["cache"] is None
        hits = _semantic(acme, "hit")
        answered = _ask(acme, REWORDED + unique)
        other = _ask(globex, ASKED + unique)  # the identical question, another tenant
        turn = _ask(acme, REWORDED + unique, thread_id=f"t-{time.time_ns()}")
        assert _semantic(acme, "hit") == hits + 1
    assert answered["cached"] is True
    assert answered["cache"]["kind"] == "semantic"
    assert answered["cache"]["source_run"] == source["id"]
    assert 0.7 <= answered["cache"]["similarity"] < 1
    assert answered["result"] == source["result"]
    assert answered["usage"]["llm_calls"] == 0
    for executed in (other, turn):
        assert executed["cache"] is None and executed["usage"]["llm_calls"] > 0
    assert _loaded_model(cached_stack)


def test_a_hit_that_names_a_callback_is_announced_once(cached_stack: Any) -> None:
    hooks = Hooks()
    try:
        unique = f" ({time.time_ns()})"
        with keyed_client(cached_stack, ACME) as acme:
            _ask(acme, ASKED + unique)
            answered = _ask(acme, REWORDED + unique, callback_url=hooks.url)
        assert answered["cache"]["kind"] == "semantic"
        hooks.wait_for(1)
        assert hooks.runs() == [answered["id"]]
        delivered = json.loads(hooks.received[0][1])
        assert delivered["cache"] == answered["cache"]
    finally:
        hooks.close()


def test_the_default_api_never_loads_the_model(stack: Any, runs: Any) -> None:
    run = runs.wait_final(runs.submit(f"How do Python sets work? ({time.time_ns()})"))
    assert run["status"] == "succeeded"
    assert not _loaded_model(stack)
    metrics = httpx.get(f"{stack.config.api_url}/metrics").text
    assert 'cache="semantic"' not in metrics
