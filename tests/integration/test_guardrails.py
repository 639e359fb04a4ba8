"""Tenants, keys, rate limits, idempotency, coalescing, caches, threads, estimates."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from podcrew_core.runtime.auth import hash_key

from .conftest import stack_config, stack_keys, stack_redis

pytestmark = pytest.mark.integration

ACME, GLOBEX, TINY = "acme-key-0123456789", "globex-key-0123456789", "tiny-key-0123456789"


@pytest.fixture(scope="module")
def tenants_stack() -> Any:
    from podcrew_cli.stack import Stack

    keys = [
        {"tenant": "acme", "sha256": hash_key(ACME)},
        {"tenant": "globex", "sha256": hash_key(GLOBEX)},
        {"tenant": "tiny", "sha256": hash_key(TINY)},
    ]
    limits = {
        "globex": {"requests_per_minute": 60, "burst": 2, "concurrent_runs": 50},
        "tiny": {"daily_tokens": 5000},
    }
    config = stack_config(
        env={
            "PODCREW_ORCHESTRATOR_API_KEYS": json.dumps(keys),
            "PODCREW_ORCHESTRATOR_TENANT_LIMITS": json.dumps(limits),
            "PODCREW_SERVICE_TOKEN": "internal-token-for-tests",
            "PODCREW_LLM_OFFLINE_LATENCY_S": "0.05",
        }
    )
    with Stack(config) as stack:
        yield stack


def _client(stack: Any, key: str | None = None, header: str = "authorization") -> httpx.Client:
    headers = {}
    if key:
        headers = {header: f"Bearer {key}" if header == "authorization" else key}
    return httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=60)


def test_missing_or_wrong_key_is_401_problem(tenants_stack: Any) -> None:
    for client in (_client(tenants_stack), _client(tenants_stack, "not-a-key")):
        with client:
            response = client.post("/v1/runs", json={"question": "What is Python?"})
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_runs_are_visible_only_to_their_tenant(tenants_stack: Any) -> None:
    with (
        _client(tenants_stack, ACME) as acme,
        _client(tenants_stack, GLOBEX, "x-api-key") as globex,
    ):
        run = acme.post("/v1/runs?wait=30", json={"question": "What is a Python tuple?"}).json()
        assert run["status"] == "succeeded" and run["tenant"] == "acme"
        for path in (f"/v1/runs/{run['id']}", f"/v1/runs/{run['id']}/events"):
            assert globex.get(path).status_code == 404
            assert acme.get(path).status_code == 200
        assert globex.delete(f"/v1/runs/{run['id']}").status_code == 404


def test_internal_endpoints_refuse_callers_without_the_service_token(tenants_stack: Any) -> None:
    body = {"run_id": "r", "question": "What is Python?", "sub_question": "What is Python?"}
    url = f"http://127.0.0.1:{tenants_stack.config.research_port}/v1/research"
    assert httpx.post(url, json=body).status_code == 401
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.post(
        url, json=body, headers={"authorization": "Bearer internal-token-for-tests"}, timeout=30
    )
    assert ok.status_code == 200


def test_rate_limit_is_429_with_retry_after(tenants_stack: Any) -> None:
    with _client(tenants_stack, GLOBEX) as globex:
        codes = [
            globex.post("/v1/runs", json={"question": f"What is Python feature {i}?"})
            for i in range(6)
        ]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["type"].endswith("/rate-limited")


def test_idempotency_key_returns_the_same_run_and_409_on_another_body(tenants_stack: Any) -> None:
    with _client(tenants_stack, ACME) as acme:
        headers = {"Idempotency-Key": f"k-{time.time_ns()}"}
        first = acme.post("/v1/runs", json={"question": "What is a Python set?"}, headers=headers)
        again = acme.post("/v1/runs", json={"question": "What is a Python set?"}, headers=headers)
        other = acme.post("/v1/runs", json={"question": "What is a Python dict?"}, headers=headers)
    assert first.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["type"].endswith("/conflict")


def test_identical_concurrent_questions_are_coalesced(tenants_stack: Any) -> None:
    question = {"question": f"How does Python's import system work {time.time_ns()}?"}
    with _client(tenants_stack, ACME) as acme:
        first = acme.post("/v1/runs", json=question).json()["id"]
        second = acme.post("/v1/runs", json=question).json()["id"]
    assert first == second


def test_a_repeated_question_is_answered_from_the_result_cache(tenants_stack: Any) -> None:
    question = {"question": f"What is a Python list comprehension {time.time_ns()}?"}
    with _client(tenants_stack, ACME) as acme:
        first = acme.post("/v1/runs?wait=30", json=question).json()
        assert first["status"] == "succeeded" and not first["cached"]
        second = acme.post("/v1/runs", json=question)
        assert second.status_code == 200
        cached = second.json()
        assert cached["cached"] and cached["id"] != first["id"]
        assert cached["result"] == first["result"]
        kinds = [
            line
            for line in acme.get(f"/v1/runs/{cached['id']}/events").text.splitlines()
            if line.startswith("event:")
        ]
    assert kinds == ["event: run.queued", "event: cache.hit", "event: run.succeeded"]
    metrics = httpx.get(f"{tenants_stack.config.api_url}/metrics").text
    assert 'podcrew_cache_requests_total{cache="result",outcome="hit"}' in metrics


def test_thread_gives_the_planner_earlier_turns(tenants_stack: Any) -> None:
    thread = f"t-{time.time_ns()}"
    with _client(tenants_stack, ACME) as acme:
        first = acme.post(
            "/v1/runs?wait=30",
            json={"question": "What is a Python generator?", "thread_id": thread},
        ).json()
        second = acme.post(
            "/v1/runs?wait=30",
            json={"question": "How is it different from a list?", "thread_id": thread},
        ).json()
    assert first["status"] == second["status"] == "succeeded"
    r = stack_redis(tenants_stack)
    turns = [
        json.loads(t) for t in r.lrange(stack_keys(tenants_stack).thread("acme", thread), 0, -1)
    ]
    r.close()
    assert [t["q"] for t in turns] == [
        "What is a Python generator?",
        "How is it different from a list?",
    ]


def test_estimate_gives_a_token_and_cost_range(tenants_stack: Any) -> None:
    with _client(tenants_stack, ACME) as acme:
        cheap = acme.post(
            "/v1/estimate",
            json={"question": "What is Python?", "max_subquestions": 2, "tier": "economy"},
        ).json()
        dear = acme.post(
            "/v1/estimate",
            json={"question": "What is Python?", "max_subquestions": 6, "tier": "premium"},
        ).json()
    assert 0 < cheap["tokens"]["low"] <= cheap["tokens"]["high"]
    assert 0 < cheap["cost_usd"]["low"] <= cheap["cost_usd"]["high"]
    assert dear["cost_usd"]["high"] > cheap["cost_usd"]["high"]
    assert dear["models"]["write"] == "claude-opus-4-5"
    for bound in ("low", "high"):  # a batch run's calls all go at the batch rate, half
        assert cheap["cost_usd_batch"][bound] == pytest.approx(cheap["cost_usd"][bound] / 2)


def test_a_batch_run_needs_a_long_deadline(tenants_stack: Any) -> None:
    body = {"question": "What is Python?", "priority": "batch", "budget": {"deadline_s": 60}}
    with _client(tenants_stack, ACME) as acme:
        refused = acme.post("/v1/runs", json=body)
    assert refused.status_code == 422
    assert "at least 600 s" in refused.json()["detail"]


def test_run_token_budget_ends_the_run_with_a_reason_and_the_partial_result(
    tenants_stack: Any,
) -> None:
    body = {
        "question": f"How do Python generators work {time.time_ns()}?",
        "budget": {"max_tokens": 1500},
    }
    with _client(tenants_stack, ACME) as acme:
        run = acme.post("/v1/runs?wait=30", json=body).json()
    assert run["status"] == "failed"
    assert run["error"]["type"] == "budget-exceeded"
    assert "1500 tokens" in run["error"]["detail"]
    # Whatever was found before the stop is kept (which stage hits the cap depends on timing;
    # the partial report itself is unit-tested in test_pipeline.py).
    if run["result"] is not None:
        assert "stopped early" in run["result"]["report"]


def test_tenant_daily_cap_refuses_further_llm_calls(tenants_stack: Any) -> None:
    with _client(tenants_stack, TINY) as tiny:
        first = tiny.post("/v1/runs?wait=30", json={"question": "What is a Python module?"}).json()
        second = tiny.post(
            "/v1/runs?wait=30", json={"question": "What is a Python package?"}
        ).json()
    assert first["status"] in ("succeeded", "failed")
    assert second["status"] == "failed"
    assert second["error"]["type"] == "budget-exceeded"
    assert "tenant tiny" in second["error"]["detail"]


def test_tool_results_are_cached_and_the_hit_is_visible(tenants_stack: Any) -> None:
    question = f"What does the Python with statement do {time.time_ns()}?"
    with _client(tenants_stack, ACME) as acme:
        runs = [
            acme.post(
                "/v1/runs?wait=30",
                json={"question": question, "thread_id": f"tc-{i}-{time.time_ns()}"},
            ).json()
            for i in range(2)
        ]
        assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
        calls = []
        for run in runs:
            with connect_sse(acme, "GET", f"/v1/runs/{run['id']}/events") as source:
                calls.append(
                    [json.loads(e.data) for e in source.iter_sse() if e.event == "tool.called"]
                )
    assert calls[0] and not any(c["cached"] for c in calls[0])
    assert calls[1] and all(c["cached"] for c in calls[1])
    metrics = httpx.get(f"http://127.0.0.1:{tenants_stack.config.research_port}/metrics").text
    assert 'podcrew_cache_requests_total{cache="kb_search",outcome="hit"}' in metrics


MISSING_RUN = "run_" + "0" * 32


def _malformed_ids(real: str) -> list[str]:
    """Ids a client could send that are not a run id's shape; some name a real run's keys."""
    return [
        f"{real}:events",
        f"{real}*",
        "*",
        "{x}",
        f"{{{real}}}",
        f"{real}%00",
        "%00",
        real.upper(),
        real[:-1],
        f"{real}0",
        "run_" + "a" * 4000,
        "run_" + "é" * 32,
        f"{real} ",
        "run_",
    ]


def _not_found(client: httpx.Client, method: str, path: str) -> dict[str, Any]:
    """The 404 problem of `path`, without the fields that echo the id it was asked for."""
    response = client.request(method, path)
    assert response.status_code == 404, (path[:80], response.status_code, response.text[:200])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem.pop("detail") and problem.pop("instance") and problem.pop("run_id", True)
    return problem


@pytest.mark.parametrize(
    ("method", "template"),
    [("GET", "/v1/runs/{}"), ("DELETE", "/v1/runs/{}"), ("GET", "/v1/runs/{}/events")],
)
def test_a_malformed_run_id_is_a_missing_run_for_every_tenant(
    tenants_stack: Any, method: str, template: str
) -> None:
    """An id that is not a run id answers exactly as a missing run, for the run's own tenant
    and for another: never a 500 (which would tell another tenant the run exists)."""
    with _client(tenants_stack, ACME) as acme, _client(tenants_stack, GLOBEX) as globex:
        real = acme.post("/v1/runs?wait=30", json={"question": "What is a Python set?"})
        assert real.json()["status"] == "succeeded"
        for client in (acme, globex):
            missing = _not_found(client, method, template.format(MISSING_RUN))
            for run_id in _malformed_ids(real.json()["id"]):
                assert _not_found(client, method, template.format(run_id)) == missing
        assert acme.get(f"/v1/runs/{real.json()['id']}").json()["status"] == "succeeded"
