"""The semantic cache at submission, on a real redis-server and the shipped embedding model:
a rewording of a question the same tenant asked is answered with that run's result, marked
and counted; another tenant's question, a thread turn and a close-topic question are not."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import (
    EventType,
    Run,
    RunCreate,
    RunResult,
    RunStatus,
    Source,
    SourceRef,
)
from podcrew_core.runtime.egress import EgressGuard, EgressPolicy
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.semantic import SemanticCache, same_subject
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions, budget_caps

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")
SETTINGS = OrchestratorSettings(key_prefix="test", semantic_cache=True)
ASKED = "How do I handle exceptions in Python?"
REWORDED = "How does exception handling work in Python?"
RESULT = RunResult(
    report="Use try and except [1].",
    sources=[SourceRef(number=1, source=Source(id="kb:tut-errors#1", title="Errors"))],
)


async def _resolve(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


@pytest.fixture
def submissions(redis: Redis) -> Submissions:
    store = RunStore(redis, KEYS, ttl_s=3600, budget_caps=budget_caps(SETTINGS))
    limiter = TenantLimiter(redis, KEYS, max_run_age_s=600)
    semantic = SemanticCache(redis, KEYS, store, SETTINGS)
    guard = EgressGuard(EgressPolicy(), resolver=_resolve)
    return Submissions(redis, KEYS, store, limiter, SETTINGS, callbacks=guard, semantic=semantic)


async def _asked_and_answered(
    submissions: Submissions, question: str = ASKED, tenant: str = "acme"
) -> Run:
    """A run of `tenant`'s that executed and succeeded, as a worker would have finished it."""
    submitted = await submissions.submit(tenant, RunCreate(question=question), None)
    assert submitted.created and submitted.run.status == RunStatus.QUEUED
    run = submitted.run.model_copy(update={"status": RunStatus.SUCCEEDED, "result": RESULT})
    assert await submissions.store.transition(run, EventType.RUN_SUCCEEDED)
    return run


def _semantic(outcome: str) -> float:
    labels = {"cache": "semantic", "outcome": outcome}
    return REGISTRY.get_sample_value("podcrew_cache_requests_total", labels) or 0.0


async def test_a_rewording_by_the_same_tenant_is_answered_from_the_cache(
    submissions: Submissions,
) -> None:
    source = await _asked_and_answered(submissions)
    hits = _semantic("hit")
    answered = (await submissions.submit("acme", RunCreate(question=REWORDED), None)).run
    assert answered.status == RunStatus.SUCCEEDED and answered.cached
    assert answered.result == RESULT
    assert answered.cache is not None and answered.cache.kind == "semantic"
    assert answered.cache.source_run == source.id
    assert SETTINGS.semantic_cache_threshold <= (answered.cache.similarity or 0) < 1
    assert _semantic("hit") == hits + 1
    events = await submissions.store.read_events(answered.id, "0")
    hit = next(json.loads(e.data) for e in events if e.type == EventType.CACHE_HIT)
    assert (hit["cache"], hit["source_run"]) == ("semantic", source.id)
    stored = await submissions.store.get(answered.id)
    assert stored is not None and stored.cache == answered.cache


async def test_another_tenants_question_is_not_answered(submissions: Submissions) -> None:
    await _asked_and_answered(submissions, tenant="acme")
    misses = _semantic("miss")
    other = (await submissions.submit("globex", RunCreate(question=ASKED), None)).run
    assert other.status == RunStatus.QUEUED and not other.cached
    assert _semantic("miss") == misses + 1


async def test_a_thread_turn_is_never_answered_nor_remembered(
    submissions: Submissions, redis: Redis
) -> None:
    await _asked_and_answered(submissions)
    lookups = _semantic("hit") + _semantic("miss")
    turn = RunCreate(question=REWORDED, thread_id="t-1")
    run = (await submissions.submit("acme", turn, None)).run
    assert run.status == RunStatus.QUEUED and not run.cached
    assert _semantic("hit") + _semantic("miss") == lookups  # not even looked up
    assert await redis.llen(KEYS.semantic_cache("acme")) == 1  # only the first question


async def test_a_close_topic_question_is_not_answered(submissions: Submissions) -> None:
    # 0.98 similar by the model (average of word vectors); the lexical guard refuses it.
    await _asked_and_answered(submissions, "How does the with statement work?")
    close = RunCreate(question="How does the for statement work?")
    run = (await submissions.submit("acme", close, None)).run
    assert run.status == RunStatus.QUEUED and not run.cached


async def test_a_run_not_finished_well_does_not_answer(submissions: Submissions) -> None:
    first = await submissions.submit("acme", RunCreate(question=ASKED), None)
    failed = first.run.model_copy(update={"status": RunStatus.FAILED})
    await submissions.store.transition(failed, EventType.RUN_FAILED)
    run = (await submissions.submit("acme", RunCreate(question=REWORDED), None)).run
    assert run.status == RunStatus.QUEUED and not run.cached


async def test_a_hit_that_names_a_callback_is_announced_once(
    submissions: Submissions, redis: Redis
) -> None:
    await _asked_and_answered(submissions)
    body = RunCreate(question=REWORDED, callback_url="https://hooks.example.test/done")
    answered = (await submissions.submit("acme", body, None)).run
    assert answered.cached
    outbox = await redis.xrange(KEYS.webhooks)
    assert [fields["run_id"] for _, fields in outbox] == [answered.id]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("How do Python generators work?", "How does a generator function work in Python?"),
        ("How do I define a class in Python?", "How are classes defined in Python?"),
        ("How do I sort a list in Python?", "How can a list be sorted in Python?"),
        ("What are f-strings?", "What are f-strings in Python?"),
    ],
)
def test_rewordings_pass_the_lexical_guard(first: str, second: str) -> None:
    assert same_subject(first, second) and same_subject(second, first)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("What is a list comprehension?", "What is a dictionary comprehension?"),
        ("How does the with statement work?", "How does the for statement work?"),
        ("How do I convert a string to an integer?", "How do I convert an integer to a string?"),
        ("What does the yield keyword do?", "What does the return keyword do?"),
        ("Is Python 3.12 faster?", "Is Python 3.13 faster?"),
        ("Why is my loop slow?", "Why is my loop not slow?"),
        ("Why doesn't my import work?", "Why does my import work?"),
        ("Is Python faster?", "Is Python 3.13 faster?"),
        ("What is Python?", "What is Rust?"),
    ],
)
def test_questions_on_another_subject_fail_the_lexical_guard(first: str, second: str) -> None:
    assert not same_subject(first, second) and not same_subject(second, first)
