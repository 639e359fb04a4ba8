"""The queue consumer against a real redis-server, its runs handed to a scripted handler:
an entry is acknowledged only when its run says so, and a drain hands unfinished runs back
to the queue. Reclaiming a dead worker's runs through real processes is
tests/integration/test_recovery.py; shutdown of a real worker, tests/integration/test_shutdown.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import Run, RunStatus
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.consumer import QueueConsumer
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import budget_caps

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")
SETTINGS = OrchestratorSettings(key_prefix="test", worker_concurrency=4)


class Script:
    """A run handler that answers each run as scripted: True or False (may the entry be
    acknowledged), an exception, or "hang" (runs until cancelled)."""

    def __init__(self, answers: dict[str, bool | Exception | str]) -> None:
        self.answers = answers
        self.seen: list[str] = []
        self.all_seen = asyncio.Event()
        self.settled: list[float] = []

    async def execute(self, delivery: Delivery) -> bool:
        self.seen.append(delivery.run_id)
        if len(self.seen) == len(self.answers):
            self.all_seen.set()
        answer = self.answers[delivery.run_id]
        if isinstance(answer, Exception):
            raise answer
        if answer == "hang":
            await asyncio.Event().wait()
        return bool(answer)

    async def settle(self, timeout_s: float) -> None:
        self.settled.append(timeout_s)


@pytest.fixture
async def store(redis: Redis) -> RunStore:
    return RunStore(redis, KEYS, SETTINGS.run_ttl_s)


async def queued(store: RunStore) -> str:
    run = Run(
        id=f"run_{uuid.uuid4().hex}",
        status=RunStatus.QUEUED,
        question="How do Python generators work?",
        budget=budget_caps(SETTINGS),
        created_at=datetime.now(UTC),
    )
    await store.create(run)
    return run.id


@contextlib.asynccontextmanager
async def consuming(consumer: QueueConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def pending_runs(redis: Redis) -> set[str]:
    entries = await redis.xpending_range(KEYS.queue, KEYS.group, min="-", max="+", count=100)
    ids = [entry["message_id"] for entry in entries]
    return {fields["run_id"] for eid, fields in await redis.xrange(KEYS.queue) if eid in ids}


async def test_an_entry_is_acknowledged_only_when_its_run_says_so(
    redis: Redis, store: RunStore
) -> None:
    done, not_yet, broken = [await queued(store) for _ in range(3)]
    script = Script({done: True, not_yet: False, broken: ConnectionError("Redis away")})
    consumer = QueueConsumer(
        SETTINGS, store, RunQueue(redis, KEYS, "worker-1"), script, CancelWatch(store)
    )
    async with consuming(consumer):
        await asyncio.wait_for(script.all_seen.wait(), 10)
        await consumer.drain(grace_s=5)  # lets every run's handling finish; none is held
    assert sorted(script.seen) == sorted([done, not_yet, broken])
    # Left pending, the other two are reclaimed later and tried again.
    assert await pending_runs(redis) == {not_yet, broken}
    assert script.settled == [5.0]


async def test_a_drain_hands_unfinished_runs_back_to_the_queue(
    redis: Redis, store: RunStore
) -> None:
    long_run = await queued(store)
    script = Script({long_run: "hang"})
    consumer = QueueConsumer(
        SETTINGS, store, RunQueue(redis, KEYS, "worker-1"), script, CancelWatch(store)
    )
    async with consuming(consumer):
        await asyncio.wait_for(script.all_seen.wait(), 10)
        await consumer.drain(grace_s=0.2)
        assert await consumer.queue.depth() == (1, 0)  # one entry waiting, none pending
    run = await store.get(long_run)
    assert run is not None and run.status is RunStatus.QUEUED
    assert (await store.read_events(long_run, "0"))[-1].type == "run.requeued"
    *_, new_entry = await redis.xrange(KEYS.queue)
    assert new_entry[1]["run_id"] == long_run
    assert script.settled == [1.0]  # background work got what is left of the grace, >= 1 s
    assert consumer.held == {}
