"""The webhook outbox on a real Redis: a final run that names a callback URL is announced
once, whichever way it became final, and a delivery a stopped worker held is finished by
another with the same delivery id."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import (
    EventType,
    ResolvedBudget,
    Run,
    RunResult,
    RunStatus,
)
from podcrew_core.runtime.egress import EgressGuard, EgressPolicy, create_client
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.outbox import WebhookOutbox, delivery_id, outbox_queue
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.webhooks import WebhookSender, verify

KEYS = Keys("test")
SECRET = b"0123456789abcdef-test-secret"
HOOK = "https://hooks.example/podcrew"


def queued(callback_url: str | None = HOOK) -> Run:
    return Run(
        id=f"run_{uuid.uuid4().hex}",
        status=RunStatus.QUEUED,
        tenant="tenant-a",
        question="How do Python generators work?",
        callback_url=callback_url,
        budget=ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        created_at=datetime.now(UTC),
    )


async def finish(store: RunStore, run: Run, status: RunStatus = RunStatus.SUCCEEDED) -> bool:
    run.status = status
    run.result = (
        RunResult(report="# Generators\n", sources=[]) if status.value == "succeeded" else None
    )
    return await store.transition(run, EventType.RUN_SUCCEEDED, {})


async def public_address(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


class Receiver:
    """What a webhook receiver got, answering 204 (once `open` is set; it is at first)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.open = asyncio.Event()
        self.open.set()

    async def answer(self, request: httpx.Request) -> httpx.Response:
        await self.open.wait()
        self.requests.append(request)
        return httpx.Response(204)

    def runs(self) -> list[str]:
        return [Run.model_validate_json(r.content).id for r in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookSender, Receiver]]:
    got = Receiver()
    policy = EgressPolicy()
    async with create_client(policy, httpx.MockTransport(got.answer)) as client:
        yield WebhookSender(client, EgressGuard(policy, public_address), SECRET), got


@pytest.fixture
def store(redis: Redis) -> RunStore:
    return RunStore(redis, KEYS, ttl_s=600)


@pytest.fixture
async def make_outbox(
    redis: Redis, store: RunStore, receiver: tuple[WebhookSender, Receiver]
) -> AsyncIterator[Callable[..., WebhookOutbox]]:
    """Starts outbox deliverers (one per worker name); stopped at the end of the test."""
    running: list[tuple[WebhookOutbox, asyncio.Task[None]]] = []

    def start(consumer: str = "worker-1", claim_idle_s: float = 60.0) -> WebhookOutbox:
        queue = outbox_queue(redis, KEYS, consumer)
        outbox = WebhookOutbox(queue, store.get_json, receiver[0], claim_idle_s=claim_idle_s)
        running.append((outbox, asyncio.create_task(outbox.run())))
        return outbox

    yield start
    for outbox, task in running:
        await outbox.drain(1.0)
        await asyncio.wait_for(task, 5)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_final_run_is_announced_once_signed_with_its_delivery_id(
    store: RunStore, make_outbox: Any, receiver: Any
) -> None:
    _, got = receiver
    run = queued()
    await store.create(run)
    make_outbox()
    assert await finish(store, run)
    assert not await finish(store, run, RunStatus.FAILED)  # a second final state is refused
    await until(lambda: len(got.requests) == 1)
    await asyncio.sleep(0.3)
    (request,) = got.requests
    assert Run.model_validate_json(request.content) == await store.get(run.id)
    assert request.headers["Podcrew-Delivery"] == delivery_id(run.id)
    timestamp = int(request.headers["Podcrew-Timestamp"])
    assert verify(
        SECRET, timestamp, request.content, request.headers["Podcrew-Signature"], timestamp
    )


async def test_a_run_answered_from_the_cache_is_announced_at_once(
    store: RunStore, make_outbox: Any, receiver: Any
) -> None:
    _, got = receiver
    run = queued()
    run.status, run.cached = RunStatus.SUCCEEDED, True
    run.result = RunResult(report="# Cached\n", sources=[])
    make_outbox()
    await store.create_finished(run, [(EventType.RUN_SUCCEEDED, {"cached": True})])
    await until(lambda: got.runs() == [run.id])


async def test_runs_without_a_callback_or_not_final_post_nothing(
    redis: Redis, store: RunStore, make_outbox: Any, receiver: Any
) -> None:
    _, got = receiver
    silent, running = queued(callback_url=None), queued()
    for run in (silent, running):
        await store.create(run)
    assert await finish(store, silent)
    running.status = RunStatus.RUNNING
    assert await store.transition(running, EventType.RUN_STARTED, {})
    make_outbox()
    await asyncio.sleep(0.5)
    assert got.requests == []
    assert await redis.xlen(KEYS.webhooks) == 0


async def test_a_stopped_workers_delivery_is_finished_by_another_once(
    store: RunStore, make_outbox: Any, receiver: Any, redis: Redis
) -> None:
    _, got = receiver
    got.open.clear()  # the first worker's delivery hangs, as if its process were stopping
    first = make_outbox("worker-1", claim_idle_s=0.3)
    run = queued()
    await store.create(run)
    assert await finish(store, run)
    await until(lambda: len(first._held) == 1)
    await first.drain(0.0)  # stopped with the delivery unfinished: it stays pending
    got.open.set()
    assert got.requests == []
    make_outbox("worker-2", claim_idle_s=0.3)
    await until(lambda: got.runs() == [run.id])
    await asyncio.sleep(0.5)
    assert got.runs() == [run.id]
    assert got.requests[0].headers["Podcrew-Delivery"] == delivery_id(run.id)
    # The entry is gone once delivered: a restart sends nothing again.
    assert (await redis.xpending(KEYS.webhooks, KEYS.webhooks_group))["pending"] == 0
