"""The run store against a real redis-server: events published together are stored in order
in one step, and a stored run is already the JSON the api would answer with."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import (
    EventType,
    ResolvedBudget,
    Run,
    RunAccepted,
    RunError,
    RunResult,
    RunStatus,
    Source,
    SourceRef,
    Usage,
)
from podcrew_orchestrator.keys import Keys, is_run_id, new_run_id
from podcrew_orchestrator.store import RunStore

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")


async def test_events_published_together_are_stored_in_order(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    run_id = f"run_{uuid.uuid4().hex}"
    first = await store.publish(run_id, EventType.RUN_STARTED)
    ids = await store.publish_many(
        run_id,
        [(EventType.RUN_PLANNED, {"sub_questions": ["a", "b"]})]
        + [(EventType.RESEARCH_STARTED, {"index": i}) for i in range(2)],
    )
    assert await store.publish_many(run_id, []) == []
    events = await store.read_events(run_id, "0")
    assert [e.id for e in events] == [first, *ids]
    assert [e.type for e in events] == ["run.started", "run.planned", *["research.started"] * 2]
    assert '"index":1' in events[-1].data
    assert 3500 < await redis.ttl(KEYS.events(run_id)) <= 3600


async def test_a_stored_run_is_what_the_api_would_serialise(redis: Redis) -> None:
    # `POST /v1/runs?wait=` answers a finished run with its stored JSON as is, where other
    # routes parse it and let FastAPI serialise the model: the two must be the same bytes.
    now = datetime(2026, 11, 23, 18, 0, 0, 123456, tzinfo=UTC)
    run = Run(
        id="run_1",
        status=RunStatus.FAILED,
        question="Pourquoi le ciel est-il bleu ? 空",
        budget=ResolvedBudget(max_tokens=1500, max_cost_usd=0.25, deadline_s=120),
        created_at=now,
        started_at=now,
        finished_at=now,
        sub_questions=["a", "b"],
        result=RunResult(
            report="# Report\n\n- claim [1]\n",
            sources=[SourceRef(number=1, source=Source(id="kb:x#1", title="X", url=None))],
            unresearched=["b"],
        ),
        error=RunError(type="deadline-exceeded", detail="late"),
        usage=Usage(input_tokens=1234, output_tokens=56, llm_calls=5, cost_usd=0.0123456789),
        cost_usd=3e-05,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        attempts=2,
    )
    store = RunStore(redis, KEYS, ttl_s=3600)
    await store.create(run)
    stored = await store.get_json(run.id)
    assert stored is not None
    answered = TypeAdapter(Run | RunAccepted).dump_json(
        Run.model_validate_json(stored), by_alias=True
    )
    assert stored.encode() == answered
    assert await store.get_json("run_missing") is None


def test_only_the_shape_of_a_new_run_id_is_a_run_id() -> None:
    made = new_run_id()
    assert is_run_id(made) and made != new_run_id()
    for other in (f"{made}:events", f"{made}\n", made.upper(), made[:-1], "run_", "*"):
        assert not is_run_id(other)
