"""Full runs over HTTP against the real stack: sync, async + poll, and SSE."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def assert_cited_report(run: dict[str, Any]) -> None:
    assert run["status"] == "succeeded", run
    result = run["result"]
    # A citation is " [n]" as the writer appends it; quoted code such as `x[0]` is not one.
    numbers = {int(n) for n in re.findall(r"(?<!\S)\[(\d+)\]", result["report"])}
    assert numbers, "the report cites nothing"
    assert numbers <= {s["number"] for s in result["sources"]}, "a citation points nowhere"
    assert all(s["source"]["id"].startswith("kb:") for s in result["sources"])
    assert 2 <= len(run["sub_questions"]) <= 6
    assert run["usage"]["llm_calls"] >= 1 + 2 * len(run["sub_questions"]) + 1
    assert run["usage"]["input_tokens"] > 0 and run["usage"]["output_tokens"] > 0


def test_sync_run_with_wait_returns_the_finished_run(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs?wait=30", json={"question": "How do Python generators and iterators work?"}
    )
    assert response.status_code == 200, response.text
    run = response.json()
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert_cited_report(run)


def test_wait_falls_back_to_202_when_the_run_takes_longer(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs?wait=0.05", json={"question": "What is a Python decorator?"}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/v1/runs/{body['id']}"
    assert_cited_report(runs.wait_final(body["id"]))


def test_async_submit_then_poll(runs: Any) -> None:
    response = runs.http.post("/v1/runs", json={"question": "How does Python handle exceptions?"})
    assert response.status_code == 202
    location = response.headers["location"]
    seen = {runs.http.get(location).json()["status"]}
    run = runs.wait_final(response.json()["id"])
    seen.add(run["status"])
    assert seen <= {"queued", "running", "succeeded"}
    assert_cited_report(run)
    assert run["started_at"] and run["finished_at"] and run["attempts"] == 1


def test_sse_delivers_every_step_in_order(runs: Any) -> None:
    run_id = runs.submit("How do Python context managers and the with statement work?")
    events = runs.events(run_id)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run.queued"
    assert kinds[-1] == "run.succeeded"
    assert kinds.index("run.started") < kinds.index("run.planned")
    subs = events[kinds.index("run.planned")]["data"]["sub_questions"]
    assert kinds.count("research.started") == len(subs)
    assert kinds.count("research.finished") == len(subs)
    assert kinds.count("tool.called") >= len(subs)
    last_research = max(i for i, k in enumerate(kinds) if k == "research.finished")
    first_delta = kinds.index("writer.delta")
    assert last_research < first_delta
    streamed = "".join(e["data"]["text"] for e in events if e["event"] == "writer.delta")
    run = runs.http.get(f"/v1/runs/{run_id}").json()
    assert streamed == run["result"]["report"]
    assert len({e["id"] for e in events}) == len(events)


def test_sse_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(runs: Any) -> None:
    run_id = runs.submit("How do Python classes and inheritance work?")
    first = runs.events(run_id, limit=4)
    assert len(first) == 4
    rest = runs.events(run_id, last_id=first[-1]["id"])
    everything = runs.events(run_id)
    assert [e["id"] for e in first + rest] == [e["id"] for e in everything]
    assert everything[-1]["event"] == "run.succeeded"


def test_cancel_a_running_run(runs: Any) -> None:
    run_id = runs.submit("How does Python's garbage collector work?")
    response = runs.http.delete(f"/v1/runs/{run_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    events = runs.events(run_id)
    assert events[-1]["event"] == "run.cancelled"
    assert runs.wait_final(run_id)["status"] == "cancelled"
    again = runs.http.delete(f"/v1/runs/{run_id}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_health_readiness_and_metrics_on_every_service(stack: Any, runs: Any) -> None:
    import httpx

    runs.http.post("/v1/runs?wait=30", json={"question": "What is a Python module?"})
    for name, service in stack.services.items():
        if service.health_url is None:
            continue
        base = service.health_url.removesuffix("/readyz")
        assert httpx.get(base + "/healthz").status_code == 200, name
        assert httpx.get(base + "/readyz").status_code == 200, name
        metrics = httpx.get(base + "/metrics")
        assert metrics.status_code == 200, name
        assert "podcrew_http_server_requests_in_flight" in metrics.text, name
    worker = httpx.get(stack.services["worker-0"].health_url.removesuffix("/readyz") + "/metrics")
    assert 'podcrew_runs_finished_total{outcome="succeeded"}' in worker.text
    assert (
        'podcrew_llm_requests_total{model="claude-haiku-4-5",outcome="ok",provider="offline",stage="plan"}'
        in worker.text
    )
