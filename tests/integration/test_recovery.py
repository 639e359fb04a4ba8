"""A worker that dies mid-run: its run is reclaimed and finished by another, or dead-lettered."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

MIN_IDLE_S = 2.0


def _wait_for_event(client: httpx.Client, run_id: str, kind: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            for line in response.iter_lines():
                if line == f"event: {kind}":
                    return
                if line.startswith("event: run.") and line.split(": ")[1] in (
                    "run.succeeded",
                    "run.failed",
                    "run.cancelled",
                ):
                    raise AssertionError(f"run ended before {kind}")
    raise AssertionError(f"no {kind} event")


def _slow_stack(make_stack: Any, **env: str) -> Any:
    return make_stack(
        env={
            "PODCREW_LLM_OFFLINE_LATENCY_S": "0.5",
            "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": str(MIN_IDLE_S),
            **env,
        }
    )


def test_sigkilled_worker_run_is_finished_by_another(make_stack: Any) -> None:
    stack = _slow_stack(make_stack)
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"question": "How do Python generators work?"}
        ).json()["id"]
        _wait_for_event(client, run_id, "run.planned")
        stack.services["worker-0"].kill()
        killed_at = time.monotonic()
        stack.add_worker()
        deadline = killed_at + MIN_IDLE_S + 5 + 10  # reclaim bound, plus the run's own time
        while time.monotonic() < deadline:
            run = client.get(f"/v1/runs/{run_id}").json()
            if run["status"] == "succeeded":
                break
            time.sleep(0.1)
        assert run["status"] == "succeeded", run
        assert run["attempts"] == 2
        started = [
            line
            for line in client.get(f"/v1/runs/{run_id}/events").text.splitlines()
            if line == "event: run.started"
        ]
        assert len(started) == 2


def test_long_run_of_a_live_worker_is_never_reclaimed(make_stack: Any) -> None:
    # Each run takes several times the min-idle period; a second worker stands by to steal.
    stack = make_stack(
        env={
            "PODCREW_LLM_OFFLINE_LATENCY_S": "0.7",
            "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": "1.0",
        },
        workers=2,
    )
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        ids = [
            client.post("/v1/runs", json={"question": f"What is Python's {topic}?"}).json()["id"]
            for topic in ("dict type", "list type", "import system")
        ]
        for run_id in ids:
            deadline = time.monotonic() + 30
            while (run := client.get(f"/v1/runs/{run_id}").json())["status"] not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert run["status"] == "succeeded"
            assert run["attempts"] == 1, "a live worker's run was reclaimed"


def test_run_delivered_too_often_is_dead_lettered_and_failed(make_stack: Any) -> None:
    stack = _slow_stack(make_stack, PODCREW_ORCHESTRATOR_MAX_DELIVERIES="1")
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"question": "How do Python generators work?"}
        ).json()["id"]
        _wait_for_event(client, run_id, "run.planned")
        stack.services["worker-0"].kill()
        stack.add_worker()
        deadline = time.monotonic() + MIN_IDLE_S + 10
        while (run := client.get(f"/v1/runs/{run_id}").json())["status"] != "failed":
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
        assert run["error"]["type"] == "dead-lettered"
        assert "delivered 2 times" in run["error"]["detail"]
    import redis

    r = redis.Redis(port=stack.config.redis_port, decode_responses=True)
    dead = r.xrange("podcrew:runs:dead")
    assert [d[1]["run_id"] for d in dead] == [run_id]
    r.close()


def test_cancelling_a_run_cancels_the_research_calls_underneath(make_stack: Any) -> None:
    stack = make_stack(env={"PODCREW_LLM_OFFLINE_LATENCY_S": "2.0"})
    research_metrics = f"http://127.0.0.1:{stack.config.research_port}/metrics"

    def cancelled_calls() -> float:
        for line in httpx.get(research_metrics).text.splitlines():
            if line.startswith("podcrew_llm_requests_total{") and 'outcome="cancelled"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"question": "How do Python generators work?"}
        ).json()["id"]
        _wait_for_event(client, run_id, "research.started")
        time.sleep(0.3)  # the research agents are now inside their first (2 s) LLM call
        assert client.delete(f"/v1/runs/{run_id}").status_code == 200
        deadline = time.monotonic() + 10
        while cancelled_calls() == 0:
            assert time.monotonic() < deadline, "the research calls ran on after the cancel"
            time.sleep(0.1)
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
