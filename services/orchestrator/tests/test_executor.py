"""The run executor against a real redis-server, the agents behind an in-memory transport:
one delivery taken to its stored final state, with the after-finish parts told only of an
ending the executor stored. The queue around it is the consumer's (test_consumer.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import EventType, Run, RunStatus
from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.ledger import Ledger
from podcrew_orchestrator.aftermath import Aftermath, Ending
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.executor import RunExecutor
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.pipeline import Pipeline
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import budget_caps

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")
SETTINGS = OrchestratorSettings(key_prefix="test", max_deliveries=3)


class Harness:
    """An executor whose after-finish parts record each ending they are given."""

    def __init__(self, redis: Redis, pipeline: Pipeline) -> None:
        self.store = RunStore(redis, KEYS, SETTINGS.run_ttl_s)
        self.queue = RunQueue(redis, KEYS, "worker-1")
        self.endings: list[Ending] = []

        async def record(ending: Ending) -> None:
            self.endings.append(ending)

        self.watch = CancelWatch(self.store)
        self.executor = RunExecutor(
            SETTINGS,
            self.store,
            self.queue,
            pipeline,
            LLMSettings(),
            Ledger(redis),
            Aftermath([record]),
            self.watch,
        )

    async def enqueue(self, **fields: Any) -> Delivery:
        run = Run(
            id=f"run_{uuid.uuid4().hex}",
            status=RunStatus.QUEUED,
            question="How do Python generators work?",
            max_subquestions=2,
            budget=fields.pop("budget", budget_caps(SETTINGS)),
            created_at=datetime.now(UTC),
            **fields,
        )
        await self.store.create(run)
        await self.queue.ensure_group()
        (delivery,) = await self.queue.read(1, 100)
        return delivery

    async def events(self, run_id: str) -> list[str]:
        return [event.type for event in await self.store.read_events(run_id, "0")]


@pytest.fixture
def make(redis: Redis, make_pipeline: Callable[..., Pipeline]) -> Callable[..., Harness]:
    """Builds a harness over the agents `make_pipeline(**options)` stands in."""

    def build(**agent_options: Any) -> Harness:
        return Harness(redis, make_pipeline(**agent_options))

    return build


async def test_a_run_is_executed_and_its_ending_stored_then_handed_on(
    make: Callable[..., Harness],
) -> None:
    h = make()
    delivery = await h.enqueue()
    assert await h.executor.execute(delivery) is True
    run = await h.store.get(delivery.run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.attempts == 1
    assert run.result is not None and run.usage.llm_calls > 0
    events = await h.events(run.id)
    assert events[:3] == ["run.queued", "run.started", "run.planned"]
    assert events[-1] == "run.succeeded"
    (ending,) = h.endings
    assert ending.run == run


async def test_the_runs_own_deadline_bounds_it(make: Callable[..., Harness]) -> None:
    # The server's deadline is 300 s; this run's budget, resolved when it was accepted, is 1 s.
    h = make(research_s=5.0)
    caps = budget_caps(SETTINGS)
    delivery = await h.enqueue(budget=caps.model_copy(update={"deadline_s": 1.0}))
    started = asyncio.get_running_loop().time()
    assert await h.executor.execute(delivery) is True
    assert asyncio.get_running_loop().time() - started < 4.0
    run = await h.store.get(delivery.run_id)
    assert run is not None and run.status is RunStatus.FAILED and run.error is not None
    assert (run.error.type, run.error.detail) == (
        "deadline-exceeded",
        "the run did not finish within 1s",
    )
    assert [e.run.status for e in h.endings] == [RunStatus.FAILED]


async def test_a_run_delivered_too_often_is_dead_lettered_not_acknowledged_here(
    make: Callable[..., Harness], redis: Redis
) -> None:
    h = make()
    delivery = await h.enqueue()
    too_often = Delivery(delivery.entry_id, delivery.run_id, SETTINGS.max_deliveries + 1)
    assert await h.executor.execute(too_often) is False  # dead_letter acknowledged it
    run = await h.store.get(delivery.run_id)
    assert run is not None and run.status is RunStatus.FAILED and run.error is not None
    assert run.error.type == "dead-lettered"
    (entry,) = await redis.xrange(KEYS.dead_letter)
    assert entry[1]["run_id"] == run.id and entry[1]["deliveries"] == "4"
    assert (await redis.xpending(KEYS.queue, KEYS.group))["pending"] == 0
    assert [e.run.error for e in h.endings] == [run.error]


async def test_a_run_already_final_is_acknowledged_without_running(
    make: Callable[..., Harness],
) -> None:
    h = make()
    delivery = await h.enqueue()
    run = await h.store.get(delivery.run_id)
    assert run is not None
    done = run.model_copy(update={"status": RunStatus.CANCELLED})
    assert await h.store.transition(done, EventType.RUN_CANCELLED)
    assert await h.executor.execute(delivery) is True
    assert await h.events(run.id) == ["run.queued", "run.cancelled"]
    assert h.endings == []


async def test_a_run_a_client_cancels_ends_with_what_it_spent(
    make: Callable[..., Harness],
) -> None:
    started: list[str] = []
    researching = asyncio.Event()

    def on_research(run_id: str, what: str) -> None:
        started.append(what)
        if started == ["started", "started"]:
            researching.set()

    h = make(research_s=5.0, on_research=on_research)
    delivery = await h.enqueue()
    execution = asyncio.create_task(h.executor.execute(delivery))
    await asyncio.wait_for(researching.wait(), 5)
    run = await h.store.get(delivery.run_id)
    assert run is not None
    # What `DELETE /v1/runs/{id}` does, then a tick of the consumer's poll.
    cancelled = run.model_copy(update={"status": RunStatus.CANCELLED})
    assert await h.store.transition(cancelled, EventType.RUN_CANCELLED)
    await h.watch.poll()
    assert await asyncio.wait_for(execution, 5) is True
    (ending,) = h.endings
    assert ending.run.status is RunStatus.CANCELLED and ending.run.finished_at is not None
    assert ending.run.usage.llm_calls == 1  # the plan, before research was cut short
    stored = await h.store.get_json(run.id)
    assert stored is not None and orjson.loads(stored)["status"] == "cancelled"
    assert (await h.events(run.id))[-1] == "run.cancelled"  # nothing written after it
