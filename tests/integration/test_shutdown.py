"""Graceful shutdown: readiness flips, work is finished or handed back, SSE streams close
with an event the client resumes from, and every process exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

pytestmark = pytest.mark.integration


def _wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _events(client: httpx.Client, run_id: str) -> list[str]:
    """Every event kind of a finished (or handed back) run; reads until the stream ends."""
    return [
        line.removeprefix("event: ")
        for line in client.get(f"/v1/runs/{run_id}/events").text.splitlines()
        if line.startswith("event: ")
    ]


def _wait_event(client: httpx.Client, run_id: str, kind: str) -> None:
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
        for sse in source.iter_sse():
            if sse.event == kind:
                return
    raise AssertionError(f"the stream ended without {kind}")


def test_worker_hands_unfinished_runs_back_and_exits_0(make_stack: Any) -> None:
    stack = make_stack(
        env={
            "PODCREW_LLM_OFFLINE_LATENCY_S": "1.0",
            "PODCREW_ORCHESTRATOR_GRACEFUL_SHUTDOWN_S": "0.5",
            "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": "60",  # reclaim cannot be what saves it
        }
    )
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"question": "How do Python generators work?"}
        ).json()["id"]
        _wait_event(client, run_id, "run.planned")
        worker = stack.services["worker-0"]
        worker.signal(signal.SIGTERM)
        assert worker.process is not None
        assert worker.process.wait(15) == 0
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
        _wait_event(client, run_id, "run.requeued")
        started = time.monotonic()
        stack.add_worker()
        _wait_for(lambda: client.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded", 30)
        # Handed back, not reclaimed: far sooner than the 60 s min-idle.
        assert time.monotonic() - started < 30
        assert client.get(f"/v1/runs/{run_id}").json()["attempts"] == 1


def test_api_drains_then_closes_streams_with_a_resumable_event(make_stack: Any) -> None:
    stack = make_stack(
        env={
            "PODCREW_LLM_OFFLINE_LATENCY_S": "2.0",
            "PODCREW_ORCHESTRATOR_DRAIN_DELAY_S": "1.5",
        }
    )
    api = stack.services["api"]
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        run_id = client.post(
            "/v1/runs", json={"question": "How do Python decorators work?"}
        ).json()["id"]
        received: list[Any] = []

        def follow() -> None:
            with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
                received.extend(source.iter_sse())

        reader = threading.Thread(target=follow)
        reader.start()
        _wait_for(lambda: any(e.event == "run.started" for e in received))
        api.signal(signal.SIGTERM)
        # During the drain delay the api still answers, but says it is not ready.
        ready = httpx.get(f"{stack.config.api_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"service": "draining"}
        reader.join(20)
        assert not reader.is_alive()
        assert api.process is not None and api.process.wait(15) == 0
    closing = received[-1]
    assert closing.event == "stream.closing"
    assert json.loads(closing.data)["resume"] is True
    # The closing event carries no id of its own, so the client's Last-Event-ID still names
    # the last real event (httpx-sse reports that remembered id on it, as browsers do).
    real = [e for e in received if e.event != "stream.closing"]
    last_id = real[-1].id
    assert closing.id == last_id
    stack.services["api"].start()
    stack.wait_ready([stack.services["api"]])
    with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
        with connect_sse(
            client, "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": last_id}
        ) as source:
            rest = list(source.iter_sse())
        everything = [e.id for e in real] + [e.id for e in rest]
        with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
            full = [e.id for e in source.iter_sse()]
    assert everything == full  # no gap, no duplicate across the restart
    assert rest[-1].event == "run.succeeded"


def test_every_process_exits_0_on_sigterm() -> None:
    # The session stack is stopped with SIGTERM at the end; check exit codes on a fresh one.
    from podcrew_cli.stack import Stack, StackConfig

    with Stack(StackConfig.on_free_ports()) as fresh:
        codes = fresh.stop()
    assert codes == dict.fromkeys(codes, 0), codes
