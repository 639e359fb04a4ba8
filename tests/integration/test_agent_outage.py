"""No run fails because an agent stopped: a research or writer agent killed, restarted or
away for a while costs runs time, never their result.

A call that could not reach its agent (refused, reset, or a proxy's 502/503) is retried on
another replica within the run's deadline and retry budget; while no replica answers, the
worker hands its runs back to the queue and pauses its intake until one does
(docs/operations.md, "When an agent stops").
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import time
from typing import Any

import httpx
import pytest

from podcrew_cli.stack import Stack

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")
RUNS = 100
OUTAGE_ENV = {
    "PODCREW_LLM_OFFLINE_LATENCY_S": "0.1",
    "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": "120",  # reclaim cannot be what saves a run
    "PODCREW_ORCHESTRATOR_DEFAULT_TENANT_LIMITS": json.dumps(
        {"requests_per_minute": 10_000, "burst": 1000, "concurrent_runs": 1000}
    ),
}


def _submit(client: httpx.Client, count: int) -> list[str]:
    def one(n: int) -> str:
        body = {"question": f"How does the asyncio event loop work? (case {n})"}
        response = client.post("/v1/runs", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _statuses(client: httpx.Client, run_ids: list[str]) -> dict[str, str]:
    return {r: client.get(f"/v1/runs/{r}").json()["status"] for r in run_ids}


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not in {timeout_s}s: {what}"
        time.sleep(0.1)


def _final(client: httpx.Client, run_ids: list[str], timeout_s: float) -> collections.Counter[str]:
    """Waits until every run is final; the count of runs by status."""
    statuses: dict[str, str] = {}

    def done() -> bool:
        statuses.update(_statuses(client, run_ids))
        return all(s in FINAL for s in statuses.values())

    _wait(done, timeout_s, "every run final")
    return collections.Counter(statuses.values())


def _running(client: httpx.Client, run_ids: list[str], at_least: int) -> None:
    _wait(
        lambda: collections.Counter(_statuses(client, run_ids).values())["running"] >= at_least,
        30,
        f"{at_least} runs running",
    )


@pytest.mark.timeout(180)
def test_research_agent_killed_and_restarted_fails_no_run(make_stack: Any) -> None:
    stack: Stack = make_stack(env=OUTAGE_ENV)
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_ids = _submit(client, RUNS)
        _running(client, run_ids, 20)
        stack.services["research-agent"].kill()
        stack.restart("research-agent")  # back in a few seconds, as a restarted pod would be
        by_status = _final(client, run_ids, 120)
    print(json.dumps({"runs": RUNS, "by_status": dict(by_status)}))
    assert by_status == {"succeeded": RUNS}, dict(by_status)


@pytest.mark.timeout(180)
def test_research_replica_killed_for_good_fails_no_run(make_stack: Any) -> None:
    stack: Stack = make_stack(research_agents=2, env=OUTAGE_ENV)
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_ids = _submit(client, RUNS)
        _running(client, run_ids, 20)
        stack.services["research-agent-2"].kill()  # not restarted: the other replica serves
        by_status = _final(client, run_ids, 120)
    print(json.dumps({"runs": RUNS, "replicas": 2, "by_status": dict(by_status)}))
    assert by_status == {"succeeded": RUNS}, dict(by_status)


def _intake_paused(stack: Stack) -> bool:
    metrics = httpx.get(f"http://127.0.0.1:{stack.config.worker_port}/metrics").text
    return "podcrew_worker_intake_paused 1.0" in metrics.splitlines()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("agent", ["research-agent", "writer-agent"])
def test_runs_stay_queued_while_no_agent_answers_then_complete(make_stack: Any, agent: str) -> None:
    stack: Stack = make_stack(env=OUTAGE_ENV)
    stack.services[agent].kill()
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_ids = _submit(client, 20)
        _wait(lambda: _intake_paused(stack), 20, "the worker pauses its intake")
        time.sleep(3)  # several probes of the agent, all refused
        assert set(_statuses(client, run_ids).values()) == {"queued"}
        stack.restart(agent)
        by_status = _final(client, run_ids, 60)
        requeued = sum(
            "event: run.requeued" in client.get(f"/v1/runs/{r}/events").text for r in run_ids
        )
    assert by_status == {"succeeded": 20}, dict(by_status)
    assert requeued  # the runs that met the outage say so in their events
    assert not _intake_paused(stack)
    worker_log = stack.services["worker-0"].log_path.read_text()
    assert "intake_paused" in worker_log and f"{agent} unreachable" in worker_log
