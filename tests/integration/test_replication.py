"""`PODCREW_REDIS_MIN_REPLICAS`: what a submission and a worker do when the replicas do not
confirm a run in time (here: the Redis has no replica at all until the test attaches one)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from podcrew_cli.stack import LOOPBACK, free_port, redis_server_argv

pytestmark = pytest.mark.integration

WAIT_TIMEOUT_MS = 200
MIN_IDLE_S = 2.0


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def test_a_run_the_replicas_do_not_confirm_is_refused_then_finished_once_they_do(
    make_stack: Any, tmp_path: Any
) -> None:
    stack = make_stack(
        env={
            "PODCREW_REDIS_MIN_REPLICAS": "1",
            "PODCREW_REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS),
            "PODCREW_ORCHESTRATOR_CLAIM_MIN_IDLE_S": str(MIN_IDLE_S),
        }
    )
    store = redis.Redis.from_url(stack.config.redis_url, decode_responses=True)
    api = httpx.Client(base_url=stack.config.api_url, timeout=30)
    body = {"question": "How do Python generators work?"}
    headers = {"Idempotency-Key": "replicated-1"}

    refused = api.post("/v1/runs", json=body, headers=headers)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "1"
    problem = refused.json()
    assert problem["type"].endswith("not-replicated")
    assert "may still execute" in problem["detail"]
    run_id = problem["run_id"]

    # On the primary the run exists and executes; its end is stored, but the worker does
    # not acknowledge the entry while no replica holds that end.
    _until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded", 60, "ended")
    time.sleep(MIN_IDLE_S * 2)  # a reclaim in between still finds no replica
    assert store.xpending("podcrew:runs", "workers")["pending"] == 1

    replica_port = free_port()
    replica = subprocess.Popen(
        redis_server_argv(
            replica_port, tmp_path, "--replicaof", LOOPBACK, str(stack.config.redis_port)
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        _until(
            lambda: store.info("replication").get("slave0", {}).get("state") == "online",
            20,
            "replica in sync",
        )
        # The same key now answers with the same run, and the worker, reclaiming the entry,
        # finds the run final and acknowledges it.
        again = api.post("/v1/runs", json=body, headers=headers)
        assert again.status_code in (200, 202), again.text
        assert again.json()["id"] == run_id
        _until(
            lambda: store.xpending("podcrew:runs", "workers")["pending"] == 0,
            MIN_IDLE_S * 10,
            "entry acknowledged",
        )
        events = api.get(f"/v1/runs/{run_id}/events").text
        assert events.count("event: run.succeeded") == 1
    finally:
        replica.terminate()
        replica.wait(10)
        api.close()
        store.close()
