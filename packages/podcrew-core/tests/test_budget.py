"""The budget ledger on a real redis-server: what a check reads, what a charge adds, and the
one round trip each costs an LLM call."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BudgetExceeded
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm import LLMRequest, Message, Stage
from podcrew_core.llm.budgeted import BudgetedProvider
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.runtime.ledger import Ledger, utc_day
from podcrew_core.runtime.scope import hop_context


def _limits(**overrides: Any) -> BudgetLimits:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "tenant": "acme",
        "max_tokens": 1000,
        "max_cost_usd": 1.0,
        "tenant_daily_tokens": 5000,
        "tenant_daily_cost_usd": 5.0,
        "global_daily_cost_usd": 50.0,
    }
    return BudgetLimits(**(values | overrides))


def _hop(limits: BudgetLimits) -> Hop:
    """The hop of the run `limits` bind, as a process serving it opens it."""
    return Hop(limits.run_id, Deadline.after(30), RetryBudget(0), limits)


async def test_a_charge_adds_to_the_run_the_tenant_and_everyone(redis: Redis) -> None:
    ledger = Ledger(redis, "t")
    limits = _limits()
    usage = Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=5, cost_usd=0.25)
    await ledger.charge(limits, usage)
    await ledger.charge(limits, usage)
    await ledger.charge(_limits(run_id="run-2"), usage)

    run, tenant, everyone = await ledger.spent(limits)
    assert (run.tokens, run.cost_usd) == (250, 0.5)
    assert (tenant.tokens, tenant.cost_usd) == (375, 0.75)
    assert (everyone.tokens, everyone.cost_usd) == (375, 0.75)
    day = utc_day()
    assert await redis.hgetall("t:run:run-1:spend") == {"tokens": "250", "micro_usd": "500000"}
    for key in ("t:run:run-1:spend", f"t:spend:{day}:tenant:acme", f"t:spend:{day}:all"):
        assert 0 < await redis.ttl(key) <= 3 * 24 * 3600


async def test_nothing_spent_reads_as_zero(redis: Redis) -> None:
    run, tenant, everyone = await Ledger(redis, "t").spent(_limits())
    assert run.tokens == tenant.tokens == everyone.tokens == 0
    assert run.cost_usd == tenant.cost_usd == everyone.cost_usd == 0.0


@pytest.mark.parametrize(
    ("limits", "budget"),
    [
        (_limits(max_tokens=120), "run_tokens"),
        (_limits(max_cost_usd=0.25), "run_cost"),
        (_limits(tenant_daily_tokens=100), "tenant_tokens"),
        (_limits(tenant_daily_cost_usd=0.1), "tenant_cost"),
        (_limits(global_daily_cost_usd=0.2), "global_cost"),
    ],
)
async def test_a_check_refuses_once_a_budget_is_spent(
    redis: Redis, limits: BudgetLimits, budget: str
) -> None:
    ledger = Ledger(redis, "t")
    await ledger.check(_limits())
    await ledger.charge(limits, Usage(input_tokens=100, output_tokens=20, cost_usd=0.25))
    with pytest.raises(BudgetExceeded) as refused:
        await ledger.check(limits)
    assert refused.value.extra["budget"] == budget


def _count_commands(redis: Redis) -> list[str]:
    sent: list[str] = []
    original = redis.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(*args, **options)

    redis.execute_command = counting  # type: ignore[method-assign]
    return sent


WRITE_REQUEST = LLMRequest(
    stage=Stage.WRITE,
    model="claude-haiku-4-5",
    system="Write.",
    messages=[Message(role="user", content="Write about generators.")],
)


async def _calls(redis: Redis) -> dict[str, int]:
    """Redis' own count of the ledger's commands so far (`INFO commandstats`)."""
    stats = await redis.info("commandstats")
    return {
        name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("hmget", "evalsha")
    }


async def test_an_llm_call_costs_one_round_trip_after_the_first_of_its_scope(
    redis: Redis,
) -> None:
    provider = BudgetedProvider(OfflineProvider())
    ledger = Ledger(redis, "t")
    await ledger.charge(_limits(run_id="warm-up"), Usage())  # the script is loaded now

    async def sent_by(call: Any) -> dict[str, int]:
        before = await _calls(redis)
        await call
        after = await _calls(redis)
        return {name: after[name] - before[name] for name in after}

    with hop_context(_hop(_limits(max_tokens=10**6)), ledger):
        first = provider.complete(WRITE_REQUEST)
        # The first call of a scope reads the totals (three counters, one pipeline), then
        # charges; the next calls check what the last charge answered: one charge each.
        assert await sent_by(first) == {"hmget": 3, "evalsha": 1}
        assert await sent_by(provider.complete(WRITE_REQUEST)) == {"hmget": 0, "evalsha": 1}

        async def streamed() -> None:
            assert [event async for event in provider.stream(WRITE_REQUEST)]

        assert await sent_by(streamed()) == {"hmget": 0, "evalsha": 1}
    per_call = (await OfflineProvider().complete(WRITE_REQUEST)).usage.total_tokens
    run, _, _ = await ledger.spent(_limits())
    assert run.tokens == 3 * per_call > 0


async def test_a_scope_is_refused_by_what_its_last_charge_saw_others_spend(
    redis: Redis,
) -> None:
    # Another run of the tenant spends its daily tokens between two calls of this scope:
    # this scope's next charge answers the tenant's total, and the call after it is refused
    # without reading the ledger again.
    provider = BudgetedProvider(OfflineProvider())
    ledger = Ledger(redis, "t")
    limits = _limits(tenant_daily_tokens=5_000)
    with hop_context(_hop(limits), ledger):
        await provider.complete(WRITE_REQUEST)
        await ledger.charge(_limits(run_id="other-run"), Usage(input_tokens=5_000))
        await provider.complete(WRITE_REQUEST)  # passed on the earlier totals: the bound
        sent = _count_commands(redis)
        with pytest.raises(BudgetExceeded) as refused:
            await provider.complete(WRITE_REQUEST)
        assert sent == []
    assert refused.value.extra["budget"] == "tenant_tokens"
