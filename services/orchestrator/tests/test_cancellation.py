"""The cancellation watch against a real redis-server: a poll stops the pipeline of each
watched run a client cancelled, and only those, and says so before stopping it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import EventType, Run, RunStatus
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import budget_caps

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")


async def test_a_poll_cancels_the_pipelines_of_cancelled_runs_only(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    runs = [
        Run(
            id=f"run_{uuid.uuid4().hex}",
            status=RunStatus.RUNNING,
            question="How do Python generators work?",
            budget=budget_caps(OrchestratorSettings()),
            created_at=datetime.now(UTC),
        )
        for _ in range(2)
    ]
    for run in runs:
        await store.create(run)
    kept, cancelled = runs
    watch = CancelWatch(store)
    pipelines = [asyncio.create_task(asyncio.Event().wait()) for _ in runs]
    with (
        watch.watching(kept.id, pipelines[0]) as kept_flag,
        watch.watching(cancelled.id, pipelines[1]) as cancelled_flag,
    ):
        await watch.poll()
        assert not any(task.done() for task in pipelines)  # nobody cancelled anything yet
        stopped = cancelled.model_copy(update={"status": RunStatus.CANCELLED})
        assert await store.transition(stopped, EventType.RUN_CANCELLED)
        await watch.poll()
        await asyncio.wait([pipelines[1]], timeout=1)
        assert pipelines[1].cancelled() and cancelled_flag.is_set()
        assert not pipelines[0].done() and not kept_flag.is_set()
    pipelines[0].cancel()
    await asyncio.gather(*pipelines, return_exceptions=True)
