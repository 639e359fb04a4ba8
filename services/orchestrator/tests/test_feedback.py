"""Feedback and evaluations against a real redis-server: they live and die with their run,
are refused for a run without a final report, and are counted once per user."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from podcrew_core.contracts.errors import RunNotFound, ValidationFailed
from podcrew_core.contracts.schemas import (
    EvaluationCreate,
    FeedbackCreate,
    ResolvedBudget,
    Run,
    RunResult,
    RunStatus,
    Source,
    SourceRef,
)
from podcrew_orchestrator.feedback import FeedbackExists, RunFeedback, RunNotFinished
from podcrew_orchestrator.keys import Keys, new_run_id
from podcrew_orchestrator.store import RunStore

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")
VERSION = "planner:aaaaaaaaaaaa,research:bbbbbbbbbbbb,writer:cccccccccccc"


def _run(status: RunStatus = RunStatus.SUCCEEDED) -> Run:
    source = SourceRef(number=1, source=Source(id="kb:x#1", title="X"))
    return Run(
        id=new_run_id(),
        status=status,
        question="What is a generator?",
        tier="premium",
        budget=ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        created_at=datetime.now(UTC),
        result=RunResult(report="A generator yields [1].", sources=[source]),
        prompt_version=VERSION,
    )


def _count(rating: str) -> float | None:
    labels = {"prompt_version": VERSION, "tier": "premium", "rating": rating}
    return REGISTRY.get_sample_value("podcrew_run_feedback_total", labels)


async def test_feedback_lives_and_dies_with_its_run(redis: Redis) -> None:
    store, feedback = RunStore(redis, KEYS, ttl_s=600), RunFeedback(redis, KEYS)
    run = _run()
    await store.create(run)
    before = _count("negative") or 0.0

    given, stored = await feedback.give(run, "key-1", FeedbackCreate(score=-1, source=1))
    assert stored and given.user == "key-1"
    assert 590 < await redis.ttl(KEYS.feedback(run.id)) <= 600
    # A retry is answered with what is stored; other feedback by the same user is refused.
    assert await feedback.give(run, "key-1", FeedbackCreate(score=-1, source=1)) == (given, False)
    with pytest.raises(FeedbackExists):
        await feedback.give(run, "key-1", FeedbackCreate(score=1))
    assert _count("negative") == before + 1  # counted once
    assert _count("positive") is not None  # both ratings' series exist, for the ratio

    evaluation = await feedback.evaluate(
        run, EvaluationCreate(scores={"support": 0.5}, evaluator="e")
    )
    attached = await feedback.attach(run)
    assert attached.feedback == [given] and attached.evaluation == evaluation

    # The run expires: so does what was said about it, and nothing new is written for it.
    await redis.delete(KEYS.run(run.id))
    with pytest.raises(RunNotFound):
        await feedback.give(run, "key-2", FeedbackCreate(score=1))
    with pytest.raises(RunNotFound):
        await feedback.evaluate(run, EvaluationCreate(scores={"x": 1}, evaluator="e"))
    assert await redis.hget(KEYS.feedback(run.id), "key-2") is None


async def test_a_run_without_a_final_report_takes_no_feedback(redis: Redis) -> None:
    store, feedback = RunStore(redis, KEYS, ttl_s=600), RunFeedback(redis, KEYS)
    running = _run(RunStatus.RUNNING)
    await store.create(running)
    with pytest.raises(RunNotFinished):
        await feedback.give(running, "key-1", FeedbackCreate(score=1))
    with pytest.raises(RunNotFinished):
        await feedback.evaluate(running, EvaluationCreate(scores={"x": 1}, evaluator="e"))
    finished = _run()
    await store.create(finished)
    with pytest.raises(ValidationFailed, match="not in the report's source list"):
        await feedback.give(finished, "key-1", FeedbackCreate(score=-1, source=2))
    assert not await redis.exists(KEYS.feedback(running.id), KEYS.feedback(finished.id))
