"""The worker's call to a research agent against each problem an agent can answer with: an
agent stood in by an in-memory transport that spends on the run's ledger (a real
redis-server) as a research loop does before it fails, then answers the problem.

What cannot pass is asked once, and the run is charged once; what can pass is asked again
only within the run's retry budget. The same path through real processes, with the problems
a real research agent answers, is tests/integration/test_agent_problems.py."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import (
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    InvalidModelOutput,
    LLMOverloaded,
    LLMRejected,
    Overloaded,
    PodcrewError,
    RetryBudgetExhausted,
    UpstreamTimeout,
    ValidationFailed,
)
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.problem import to_problem
from podcrew_core.contracts.schemas import ResearchRequest, Usage
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.scope import open_hop
from podcrew_orchestrator.clients.agents import ResearchClient

pytestmark = pytest.mark.integration  # a real redis-server

ONE_LOOP = Usage(input_tokens=300, output_tokens=40, cost_usd=0.001, llm_calls=1)
LIMITS = BudgetLimits(
    run_id="run-1",
    tenant="acme",
    max_tokens=100_000,
    max_cost_usd=5.0,
    tenant_daily_tokens=1_000_000,
    tenant_daily_cost_usd=50.0,
    global_daily_cost_usd=500.0,
)
BODY = ResearchRequest(run_id="run-1", question="Q?", sub_question="How do generators work?")


def _agent(ledger: Ledger, answer: PodcrewError, requests: list[str]) -> httpx.MockTransport:
    """Each request: read the hop, spend one research loop on the run's ledger, fail."""

    async def handle(request: httpx.Request) -> httpx.Response:
        hop = Hop.from_headers(
            request.headers, default_deadline_s=60, default_retries=0, what="research"
        )
        requests.append(request.headers["x-podcrew-retry-budget"])
        assert hop.limits is not None
        await ledger.charge(hop.limits, ONE_LOOP)
        return httpx.Response(answer.status, json=to_problem(answer), headers=answer.headers)

    return httpx.MockTransport(handle)


async def _research(
    redis: Redis, answer: PodcrewError, retries: int
) -> tuple[type[PodcrewError], list[str], int, Hop]:
    ledger = Ledger(redis, "test")
    requests: list[str] = []
    run = Hop("run-1", Deadline.after(30), RetryBudget(retries), LIMITS)
    async with httpx.AsyncClient(transport=_agent(ledger, answer, requests)) as http:
        client = ResearchClient(http, "http://research")
        with pytest.raises(type(answer)) as failed:
            async with open_hop(run, ledger, what="the run"):
                await client.research(BODY, run)
    spent, _, _ = await ledger.spent(LIMITS)
    return type(failed.value), requests, spent.tokens, run


@pytest.mark.parametrize(
    "answer",
    [
        LLMRejected("the provider refused the request"),
        InvalidModelOutput("submit_findings output failed validation: 1 error(s)"),
        BudgetExceeded("the run used 100000 of its 100000 tokens", budget="run_tokens"),
        DeadlineExceeded("research did not finish within 12s"),
        BadRequest("x-podcrew-budget is not a valid budget"),
        ValidationFailed("sub_question: Field required"),
        CircuitOpen("llm-simulated failed repeatedly"),
        RetryBudgetExhausted("the run's retry budget is spent"),
        UpstreamTimeout("the LLM did not answer before the deadline"),
    ],
    ids=lambda e: e.slug,
)
async def test_a_problem_that_cannot_pass_is_asked_once_and_charged_once(
    redis: Redis, answer: PodcrewError
) -> None:
    raised, requests, tokens, run = await _research(redis, answer, retries=5)
    assert raised is type(answer)
    assert len(requests) == 1
    assert tokens == ONE_LOOP.total_tokens
    assert (run.retries.remaining, run.retries.spent) == (5, 0)


@pytest.mark.parametrize(
    "answer",
    [Overloaded("no research-agent slot freed up"), LLMOverloaded("Overloaded")],
    ids=lambda e: e.slug,
)
@pytest.mark.parametrize("retries", [0, 1, 2])
async def test_what_can_pass_is_asked_again_within_the_runs_retry_budget(
    redis: Redis, answer: PodcrewError, retries: int
) -> None:
    raised, requests, tokens, run = await _research(redis, answer, retries)
    assert raised is type(answer)
    assert requests == [str(retries - n) for n in range(retries + 1)]
    assert tokens == (retries + 1) * ONE_LOOP.total_tokens
    assert (run.retries.remaining, run.retries.spent) == (0, retries)
