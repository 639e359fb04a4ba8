"""A component test of the worker's cancellation poll: the worker against a real
redis-server, with the agents stood in by an in-memory transport, so the test can see which
research calls were cancelled and which finished. The same path through the real processes
is tests/integration/test_recovery.py (`test_cancelling_a_run_cancels_the_research_calls_
underneath`) and tests/integration/test_runs.py (`test_cancel_a_running_run`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import EventType, Run, RunStatus
from podcrew_core.llm import LLMSettings
from podcrew_orchestrator.consumer import CANCEL_POLL_S
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.pipeline import Pipeline
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import budget_caps
from podcrew_orchestrator.worker import create_worker

pytestmark = pytest.mark.integration  # a real redis-server

RESEARCH_S = 3.0  # long enough to cancel a run in the middle of its research


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_cancelling_one_of_several_running_runs_stops_only_that_one(
    redis: Redis, make_pipeline: Callable[..., Pipeline]
) -> None:
    research: dict[str, list[str]] = {}
    pipeline = make_pipeline(
        research_s=RESEARCH_S,
        on_research=lambda run_id, what: research.setdefault(run_id, []).append(what),
    )
    keys = Keys("test")
    settings = OrchestratorSettings(key_prefix="test", worker_concurrency=8)
    store = RunStore(redis, keys, settings.run_ttl_s)
    runs = [
        Run(
            id=f"run_{uuid.uuid4().hex}",
            status=RunStatus.QUEUED,
            question=f"How do Python generators work, part {n}?",
            max_subquestions=2,
            budget=budget_caps(settings),
            created_at=datetime.now(UTC),
        )
        for n in range(3)
    ]
    ids = [run.id for run in runs]
    for run in runs:
        await store.create(run)

    async def researching() -> bool:  # every run has both its research calls in flight
        return all(research.get(run_id) == ["started", "started"] for run_id in ids)

    async def middle_stopped() -> bool:
        return research[ids[1]] == ["started", "started", "cancelled", "cancelled"]

    async def all_final() -> bool:
        return all(s is not None and s.terminal for s in await store.statuses(ids))

    worker = create_worker(settings, redis, pipeline, LLMSettings())
    consumer = asyncio.create_task(worker.run())
    try:
        await _until(researching)
        assert await store.statuses(ids) == [RunStatus.RUNNING] * 3
        cancelled_at = time.monotonic()
        # What `DELETE /v1/runs/{id}` does: the worker learns of it from the status.
        middle = runs[1].model_copy(update={"status": RunStatus.CANCELLED})
        assert await store.transition(middle, EventType.RUN_CANCELLED)
        await _until(middle_stopped)
        assert time.monotonic() - cancelled_at < CANCEL_POLL_S + 1.0
        await _until(all_final)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    assert await store.statuses(ids) == [
        RunStatus.SUCCEEDED,
        RunStatus.CANCELLED,
        RunStatus.SUCCEEDED,
    ]
    for run_id in (ids[0], ids[2]):
        assert research[run_id] == ["started", "started", "finished", "finished"]
    assert worker.held == {}
