"""A run's budget is resolved once, when it is accepted: what the client asked for within the
server's caps, the caps where it asked for nothing. The run record holds the values in
force, and a record stored by an earlier version, with nulls in its budget, still loads."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import ResolvedBudget, RunBudget, RunCreate, RunStatus
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions, budget_caps, resolve_budget

KEYS = Keys("test")
SETTINGS = OrchestratorSettings(
    key_prefix="test", max_run_tokens=50_000, max_run_cost_usd=2.0, run_deadline_s=120.0
)
CAPS = ResolvedBudget(max_tokens=50_000, max_cost_usd=2.0, deadline_s=120.0)


def test_the_caps_are_the_servers_run_limits() -> None:
    assert budget_caps(SETTINGS) == CAPS


def test_a_run_that_asks_for_nothing_gets_the_caps() -> None:
    assert resolve_budget(RunBudget(), CAPS) == CAPS


def test_a_run_gets_what_it_asks_for_within_the_caps() -> None:
    asked = RunBudget(max_tokens=1_500, max_cost_usd=9.0, deadline_s=30)
    assert resolve_budget(asked, CAPS) == ResolvedBudget(
        max_tokens=1_500, max_cost_usd=2.0, deadline_s=30.0
    )


def test_the_budget_in_force_has_no_unset_limit() -> None:
    with pytest.raises(ValidationError):
        ResolvedBudget.model_validate({"max_tokens": None, "max_cost_usd": 1.0, "deadline_s": 9})


@pytest.mark.integration  # a real redis-server
async def test_an_accepted_run_stores_and_shows_the_budget_in_force(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600, budget_caps=CAPS)
    submissions = Submissions(
        redis, KEYS, store, TenantLimiter(redis, KEYS, max_run_age_s=600), SETTINGS
    )
    body = RunCreate(question="What is a Python generator?", budget=RunBudget(deadline_s=30))
    submitted = await submissions.submit("tenant-a", body, None)
    stored = await store.get_json(submitted.run.id)
    assert stored is not None
    # What `GET /v1/runs/{id}` answers: every limit a number, none left for later to fill.
    assert orjson.loads(stored)["budget"] == {
        "max_tokens": 50_000,
        "max_cost_usd": 2.0,
        "deadline_s": 30.0,
    }


@pytest.mark.integration  # a real redis-server
async def test_a_record_of_an_earlier_version_loads_with_the_caps_for_its_nulls(
    redis: Redis,
) -> None:
    records = {
        "run_nulls": {"max_tokens": 1_000, "max_cost_usd": None, "deadline_s": None},
        "run_none": None,  # stored before runs had a budget at all
    }
    for run_id, budget in records.items():
        record = {
            "id": run_id,
            "status": "queued",
            "question": "What is a Python generator?",
            "created_at": "2026-11-20T10:00:00Z",
            **({"budget": budget} if budget else {}),
        }
        await redis.hset(
            KEYS.run(run_id), mapping={"status": "queued", "data": orjson.dumps(record)}
        )

    store = RunStore(redis, KEYS, ttl_s=3600, budget_caps=CAPS)
    nulls, none = await store.get("run_nulls"), await store.get("run_none")
    assert nulls is not None and none is not None
    assert nulls.status is RunStatus.QUEUED
    assert nulls.budget == ResolvedBudget(max_tokens=1_000, max_cost_usd=2.0, deadline_s=120.0)
    assert none.budget == CAPS
    with pytest.raises(ValidationError):  # a store not told the caps cannot make it current
        await RunStore(redis, KEYS, ttl_s=3600).get("run_nulls")
