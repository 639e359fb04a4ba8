"""What happens after a run ends, part by part: the order and the background of `Aftermath`,
the thread memory and result cache, the finished-run metrics, the audit line, the webhook."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from podcrew_core.contracts.schemas import (
    ResolvedBudget,
    Run,
    RunError,
    RunResult,
    RunStatus,
    Source,
    SourceRef,
    Usage,
)
from podcrew_core.runtime.logging import configure_logging
from podcrew_orchestrator.aftermath import (
    Aftermath,
    Ending,
    FinishedRunMetrics,
    RunMemory,
    audit,
)
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import run_digest

KEYS = Keys("test")
SECRET = b"0123456789abcdef-test-secret"
T0 = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)
REPORT = RunResult(
    report="# Generators\n\nThey yield [1].\n",
    sources=[SourceRef(number=1, source=Source(id="kb:gen#1", title="Generators"))],
)


def ended(status: RunStatus = RunStatus.SUCCEEDED, **fields: Any) -> Run:
    done: dict[str, Any] = {
        "id": f"run_{uuid.uuid4().hex}",
        "status": status,
        "tenant": "tenant-a",
        "question": "How do Python generators work?",
        "budget": ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=4),
        "usage": Usage(input_tokens=300, output_tokens=20, llm_calls=3, cost_usd=0.25),
        "cost_usd": 0.25,
    }
    if status is RunStatus.SUCCEEDED:
        done["result"] = REPORT
    return Run.model_validate({**done, **fields})


@contextmanager
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines the service would write, read by the function yielded. Configured in
    the test's own phase: a handler made during setup writes to setup's closed stream."""
    configure_logging("test")

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    try:
        yield read
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()


# --- Aftermath ------------------------------------------------------------------------------


async def test_parts_run_in_order_and_background_ones_until_settled() -> None:
    seen: list[str] = []
    receiver_may_answer = asyncio.Event()

    def part(name: str) -> Any:
        async def call(ending: Ending) -> None:
            seen.append(f"{name}:{ending.run.status.value}")

        return call

    async def slow_receiver(ending: Ending) -> None:
        await receiver_may_answer.wait()
        seen.append("webhook")

    aftermath = Aftermath([part("memory"), part("metrics")], background=[slow_receiver])
    await aftermath(Ending(ended()))
    # The run is through its aftermath while the receiver has not answered yet.
    assert seen == ["memory:succeeded", "metrics:succeeded"]
    await aftermath.settle(0.05)  # a settle that runs out leaves it running
    assert "webhook" not in seen
    receiver_may_answer.set()
    await aftermath.settle(1.0)
    assert seen[-1] == "webhook"


async def test_a_part_that_fails_stops_the_parts_after_it() -> None:
    seen: list[str] = []

    async def failing(ending: Ending) -> None:
        raise ConnectionError("Redis away")

    async def later(ending: Ending) -> None:
        seen.append("later")

    aftermath = Aftermath([failing, later], background=[later])
    with pytest.raises(ConnectionError):
        await aftermath(Ending(ended()))
    await aftermath.settle(0.1)
    assert seen == []


# --- RunMemory ------------------------------------------------------------------------------


@pytest.mark.integration  # a real redis-server
async def test_a_succeeded_run_in_a_thread_is_remembered_by_the_thread(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    memory = RunMemory(store, OrchestratorSettings(key_prefix="test"))
    run = ended(thread_id="t-1")
    await memory(Ending(run))
    assert await store.thread_history("tenant-a", "t-1", 10) == [(run.question, REPORT.report)]
    assert await redis.get(KEYS.result_cache(run_digest(run))) is None  # threads not cached


@pytest.mark.integration  # a real redis-server
async def test_a_succeeded_run_outside_a_thread_answers_the_same_question_later(
    redis: Redis,
) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    run = ended()
    await RunMemory(store, OrchestratorSettings(key_prefix="test"))(Ending(run))
    cached = await redis.get(KEYS.result_cache(run_digest(run)))
    assert cached is not None and RunResult.model_validate_json(cached) == REPORT
    assert 0 < await redis.ttl(KEYS.result_cache(run_digest(run))) <= 3600


@pytest.mark.integration  # a real redis-server
@pytest.mark.parametrize(
    ("run", "cache_ttl_s"),
    [
        (ended(RunStatus.FAILED, result=REPORT), 3600),  # a partial report of a failed run
        (ended(result=REPORT.model_copy(update={"unresearched": ["b"]})), 3600),
        (ended(), 0),  # the result cache is off
    ],
    ids=["failed", "incomplete", "cache-off"],
)
async def test_what_is_not_remembered(redis: Redis, run: Run, cache_ttl_s: int) -> None:
    settings = OrchestratorSettings(key_prefix="test", result_cache_ttl_s=cache_ttl_s)
    await RunMemory(RunStore(redis, KEYS, ttl_s=3600), settings)(Ending(run))
    assert await redis.keys("test:*") == []


# --- FinishedRunMetrics ---------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_finished_run_is_counted_by_outcome_tier_and_tenant_class(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = OrchestratorSettings.model_validate(
        {"tenant_limits": {"tenant-a": {"tenant_class": "gold"}}}
    )
    metrics = FinishedRunMetrics(settings)
    before = {
        "failed": sample("podcrew_runs_finished_total", outcome="failed"),
        "duration": sample("podcrew_run_duration_seconds_sum", outcome="failed"),
        "cost": sample("podcrew_run_cost_usd_total", tier="premium", tenant_class="gold"),
        "tokens": sample("podcrew_run_tokens_total", tier="premium", tenant_class="gold"),
    }
    error = RunError(type="budget-exceeded", detail="out of tokens")
    with json_logs(capsys) as lines:
        await metrics(Ending(ended(RunStatus.FAILED, tier="premium", error=error)))
        (line,) = [line for line in lines() if line["event"] == "run_finished"]
    assert sample("podcrew_runs_finished_total", outcome="failed") == before["failed"] + 1
    assert sample("podcrew_run_duration_seconds_sum", outcome="failed") == pytest.approx(
        before["duration"] + 4.0
    )
    assert sample(
        "podcrew_run_cost_usd_total", tier="premium", tenant_class="gold"
    ) == pytest.approx(before["cost"] + 0.25)
    assert sample("podcrew_run_tokens_total", tier="premium", tenant_class="gold") == (
        before["tokens"] + 320
    )
    assert (line["status"], line["error"], line["tokens"]) == ("failed", "budget-exceeded", 320)


async def test_a_run_a_client_cancelled_is_not_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = sample("podcrew_runs_finished_total", outcome="cancelled")
    with json_logs(capsys) as lines:
        await FinishedRunMetrics(OrchestratorSettings())(Ending(ended(RunStatus.CANCELLED)))
        assert [line for line in lines() if line["event"] == "run_finished"] == []
    assert sample("podcrew_runs_finished_total", outcome="cancelled") == before


# --- audit ----------------------------------------------------------------------------------


async def test_the_audit_line_says_what_the_run_did(capsys: pytest.CaptureFixture[str]) -> None:
    run = ended(attempts=2)
    with json_logs(capsys) as lines:
        await audit(Ending(run, {"kb_search": 3, "fetch_url": 1}))
        (line,) = [line for line in lines() if line["event"] == "run_audit"]
    assert line["run_id"] == run.id and line["tenant"] == "tenant-a"
    assert (line["status"], line["attempts"], line["duration_s"]) == ("succeeded", 2, 4.0)
    assert line["tools"] == {"fetch_url": 1, "kb_search": 3} and line["tool_calls"] == 4
    assert (line["total_tokens"], line["cost_usd"]) == (320, 0.25)
