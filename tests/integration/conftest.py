"""Integration fixtures: the real stack (redis-server + every service) on free loopback ports."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from podcrew_cli.stack import Stack, StackConfig, redis_server
from podcrew_core.runtime.auth import hash_key
from podcrew_orchestrator.keys import Keys, keys_for

FINAL = ("succeeded", "failed", "cancelled")

# The Redis topology the stacks of this session run on: `PODCREW_TEST_REDIS=cluster` runs
# the suite's stacks on a Redis Cluster of six nodes with the run queue in
# CLUSTER_PARTITIONS partitions (`make test` runs the run, event, cancel, limit, budget and
# idempotency tests so, after the whole suite on one Redis).
TOPOLOGY = os.environ.get("PODCREW_TEST_REDIS", "standalone")
CLUSTER_PARTITIONS = 6


def stack_config(**overrides: Any) -> StackConfig:
    """A stack on free ports and on this session's Redis topology."""
    if TOPOLOGY == "cluster":
        env = {"PODCREW_ORCHESTRATOR_QUEUE_PARTITIONS": str(CLUSTER_PARTITIONS)}
        overrides = {"redis": "cluster", **overrides, "env": {**env, **overrides.get("env", {})}}
    return StackConfig.on_free_ports(**overrides)


def stack_keys(stack: Stack) -> Keys:
    """The key names `stack`'s services use."""
    partitions = int(stack.config.env.get("PODCREW_ORCHESTRATOR_QUEUE_PARTITIONS", "1"))
    return keys_for("podcrew", partitions, cluster=stack.config.redis == "cluster")


def stack_redis(stack: Stack) -> redis.Redis | redis.RedisCluster:
    """A client of `stack`'s Redis, whatever its topology (a cluster through any node)."""
    if stack.config.redis == "cluster":
        return redis.RedisCluster.from_url(stack.config.redis_url, decode_responses=True)
    return redis.Redis.from_url(stack.config.redis_url, decode_responses=True)


class Runs:
    """A thin client of the public API, as a test would use it."""

    def __init__(self, client: httpx.Client) -> None:
        self.http = client

    def submit(self, question: str = "How do Python generators work?", **body: Any) -> str:
        response = self.http.post("/v1/runs", json={"question": question, **body})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def events(
        self, run_id: str, last_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Events as {id, event, data}; ends at the final event or after `limit` events."""
        headers = {"Last-Event-ID": last_id} if last_id else {}
        out: list[dict[str, Any]] = []
        with connect_sse(self.http, "GET", f"/v1/runs/{run_id}/events", headers=headers) as src:
            assert src.response.status_code == 200
            for sse in src.iter_sse():
                out.append({"id": sse.id, "event": sse.event, "data": json.loads(sse.data)})
                if limit is not None and len(out) >= limit:
                    break
        return out

    def wait_final(self, run_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.http.get(f"/v1/runs/{run_id}").json()
            if run["status"] in FINAL:
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} not final after {timeout_s}s: {run}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    config = stack_config(env={"PODCREW_LLM_OFFLINE_LATENCY_S": "0.1"})
    with Stack(config) as running:
        yield running


@pytest.fixture
def runs(stack: Stack) -> Iterator[Runs]:
    with httpx.Client(base_url=stack.config.api_url, timeout=30.0) as client:
        yield Runs(client)


@pytest.fixture
def make_stack() -> Iterator[Any]:
    """Build extra stacks with their own settings; all are stopped at the end of the test."""
    stacks: list[Stack] = []

    def build(**config: Any) -> Stack:
        s = Stack(stack_config(**config))
        stacks.append(s)
        s.__enter__()
        return s

    yield build
    for s in stacks:
        s.close()


@pytest.fixture
def redis_url(tmp_path: Any) -> Iterator[str]:
    """A real redis-server of its own, on a free loopback port."""
    with redis_server(tmp_path, "--appendonly", "no") as url:
        yield url


@contextmanager
def keyed_stack(tenant_of: Mapping[str, str], **env: str) -> Iterator[Stack]:
    """A stack whose api knows these API keys (key -> tenant), with `env` settings on top."""
    keys = [{"tenant": tenant, "sha256": hash_key(key)} for key, tenant in tenant_of.items()]
    config = stack_config(env={"PODCREW_ORCHESTRATOR_API_KEYS": json.dumps(keys), **env})
    with Stack(config) as stack:
        yield stack


def keyed_client(stack: Stack, key: str, timeout: float = 60.0) -> httpx.Client:
    """A client of `stack`'s api presenting `key`."""
    return httpx.Client(
        base_url=stack.config.api_url, headers={"authorization": f"Bearer {key}"}, timeout=timeout
    )
