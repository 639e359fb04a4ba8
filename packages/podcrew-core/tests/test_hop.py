"""The hop: one carrier of a run's context across processes (its headers), opened once in
the task that serves it and read from there by everything underneath."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BadRequest, DeadlineExceeded, LLMRejected
from podcrew_core.contracts.hop import (
    BUDGET_HEADER,
    DEADLINE_HEADER,
    PRIORITY_HEADER,
    RETRY_BUDGET_HEADER,
    RUN_ID_HEADER,
    Hop,
    RetryBudget,
)
from podcrew_core.runtime.scope import current_hop, current_spend, hop_context, open_hop

LIMITS = BudgetLimits(
    run_id="run-1",
    tenant="acme",
    max_tokens=1000,
    max_cost_usd=1.0,
    tenant_daily_tokens=5000,
    tenant_daily_cost_usd=5.0,
    global_daily_cost_usd=50.0,
)


def _received(headers: dict[str, str]) -> Hop:
    return Hop.from_headers(headers, default_deadline_s=7.0, default_retries=4, what="research")


def test_a_hop_crosses_as_headers_and_arrives_whole() -> None:
    sent = Hop("run-1", Deadline.after(2.0), RetryBudget(3), LIMITS)
    headers = sent.to_headers()
    assert set(headers) == {RUN_ID_HEADER, DEADLINE_HEADER, RETRY_BUDGET_HEADER, BUDGET_HEADER}

    received = _received(headers)

    assert received.run_id == "run-1"
    assert 1.9 < received.deadline.remaining() <= 2.0
    assert (received.retries.remaining, received.retries.spent) == (3, 0)
    assert received.limits == LIMITS


def test_the_budget_header_names_the_run_and_its_scope_and_no_storage_detail() -> None:
    headers = Hop("run-1", Deadline.after(2.0), RetryBudget(3), LIMITS).to_headers()
    assert set(orjson.loads(headers[BUDGET_HEADER])) == {
        "run_id",
        "tenant",
        "max_tokens",
        "max_cost_usd",
        "tenant_daily_tokens",
        "tenant_daily_cost_usd",
        "global_daily_cost_usd",
    }


def test_what_the_caller_did_not_send_is_the_services_default() -> None:
    received = _received({})
    assert received.run_id is None and received.limits is None
    assert 6.9 < received.deadline.remaining() <= 7.0
    assert received.retries.remaining == 4
    assert received.priority == "interactive"


def test_a_batch_runs_priority_crosses_with_its_hop_and_its_shares() -> None:
    sent = Hop("run-1", Deadline.after(2.0), RetryBudget(3), LIMITS, "batch")
    assert _received(sent.share(1).to_headers()).priority == "batch"


@pytest.mark.parametrize(
    "headers",
    [
        {DEADLINE_HEADER: "soon"},
        {RETRY_BUDGET_HEADER: "-1"},
        {BUDGET_HEADER: "{not json"},
        {PRIORITY_HEADER: "urgent"},
        {RUN_ID_HEADER: "run-2", BUDGET_HEADER: LIMITS.model_dump_json()},
    ],
)
def test_malformed_hop_headers_are_bad_requests(headers: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        _received(headers)


def test_work_that_cannot_finish_in_time_is_refused_on_arrival() -> None:
    with pytest.raises(DeadlineExceeded, match="research"):
        _received({DEADLINE_HEADER: "10"})


def test_a_share_is_the_same_run_with_retries_of_its_own_charged_back() -> None:
    run = Hop("run-1", Deadline.after(5.0), RetryBudget(6), LIMITS)
    share = run.share(2)
    assert (share.run_id, share.deadline, share.limits) == ("run-1", run.deadline, LIMITS)
    assert share.retries.try_spend() and share.retries.try_spend()
    assert not share.retries.try_spend()
    share.retries.charge(1)  # what the agent reported spending
    run.retries.charge(share.retries.spent)
    assert (run.retries.remaining, run.retries.spent) == (3, 3)
    assert run.share(-1).retries.remaining == 0


async def test_an_opened_hop_is_current_in_the_task_and_what_it_starts() -> None:
    hop = Hop("run-1", Deadline.after(5.0), RetryBudget(1))
    assert current_hop() is None
    async with open_hop(hop, what="the run"):
        assert current_hop() is hop
        assert await asyncio.create_task(_current()) is hop
        assert current_spend() is None  # no ledger, no limits: nothing is counted
    assert current_hop() is None


async def _current() -> Hop | None:
    return current_hop()


async def test_an_opened_hop_bounds_its_block_by_the_deadline() -> None:
    hop = Hop("run-1", Deadline.after(0.1), RetryBudget(1))
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded, match=r"the run did not finish within 0\.\d\ds"):
        async with open_hop(hop, what="the run"):
            await asyncio.sleep(5)
    assert asyncio.get_running_loop().time() - started < 1.0


async def _own_timeout() -> None:
    async with open_hop(Hop(None, Deadline.after(5.0), RetryBudget(0)), what="x"):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)


async def test_a_timeout_of_the_blocks_own_is_not_the_deadline() -> None:
    with pytest.raises(TimeoutError):
        await _own_timeout()


def _refused_after_retries(hop: Hop, retries: int) -> None:
    with hop_context(hop):
        for _ in range(retries):
            assert hop.retries.try_spend()
        raise LLMRejected("no")


def test_a_failure_leaving_a_hop_says_what_the_hop_spent_on_retries() -> None:
    hop = Hop("run-1", Deadline.after(5.0), RetryBudget(3))
    with pytest.raises(LLMRejected) as failed:
        _refused_after_retries(hop, 1)
    assert failed.value.extra == {"retries": 1}
    with pytest.raises(LLMRejected) as untouched:
        _refused_after_retries(hop.share(3), 0)
    assert untouched.value.extra == {}
