"""Graceful shutdown: readiness flips, work is finished or handed back, SSE streams close
with an event the client resumes from, and every process exits 0."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")


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


# --- `podcrew up` stopped with runs in flight -------------------------------------------------

IN_FLIGHT_RUNS = 80


def _up(data_dir: Any, ports: dict[str, int], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The real `podcrew up`, as a user runs it, on `data_dir` and the given ports."""
    argv = [sys.executable, "-m", "podcrew_cli", "up", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [f"--{flag}", str(port)]
    with (data_dir / "up.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)


def _wait_up(api_url: str, up: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        assert up.poll() is None, "podcrew up exited during start-up"
        try:
            return httpx.get(f"{api_url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_for(ready, 60)


def _statuses(client: httpx.Client, run_ids: list[str]) -> collections.Counter[str]:
    return collections.Counter(client.get(f"/v1/runs/{r}").json()["status"] for r in run_ids)


@pytest.mark.timeout(240)
def test_podcrew_up_stopped_with_runs_in_flight_loses_none(tmp_path: Any) -> None:
    from podcrew_cli.stack import free_port

    ports = {
        f"{name}-port": free_port()
        for name in ("api", "worker", "research", "writer", "redis", "simulator")
    }
    api_url = f"http://127.0.0.1:{ports['api-port']}"
    env = {
        "PODCREW_LLM_OFFLINE_LATENCY_S": "0.3",
        # Short enough that runs are still executing when it ends: they are handed back.
        "PODCREW_ORCHESTRATOR_GRACEFUL_SHUTDOWN_S": "1.0",
        "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": "120",  # reclaim cannot be what saves them
        "PODCREW_ORCHESTRATOR_DEFAULT_TENANT_LIMITS": json.dumps(
            {"requests_per_minute": 10_000, "burst": 1000, "concurrent_runs": 1000}
        ),
    }
    up = _up(tmp_path, ports, env)
    try:
        _wait_up(api_url, up)
        with httpx.Client(base_url=api_url, timeout=30) as client:
            run_ids = [
                client.post(
                    "/v1/runs", json={"question": f"How do Python generators work? (case {n})"}
                ).json()["id"]
                for n in range(IN_FLIGHT_RUNS)
            ]
            _wait_for(lambda: _statuses(client, run_ids)["running"] >= 10, 30)
            up.send_signal(signal.SIGTERM)
            assert up.wait(90) == 0
        up = _up(tmp_path, ports, env)  # the same data directory: Redis reloads its AOF
        _wait_up(api_url, up)
        with httpx.Client(base_url=api_url, timeout=30) as client:
            _wait_for(lambda: _statuses(client, run_ids).keys() <= set(FINAL), 60)
            by_status = _statuses(client, run_ids)
            attempts = [client.get(f"/v1/runs/{r}").json()["attempts"] for r in run_ids]
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(90)
    print(json.dumps({"runs": IN_FLIGHT_RUNS, "by_status": dict(by_status)}))
    assert by_status["failed"] == 0, dict(by_status)
    assert by_status["succeeded"] == IN_FLIGHT_RUNS, dict(by_status)
    assert max(attempts) == 1  # handed back, never reclaimed after a lost heartbeat
