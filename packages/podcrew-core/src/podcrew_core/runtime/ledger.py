"""Token and cost budgets, enforced before every LLM call, in whichever process makes it.

A run's spend is kept in Redis (`{prefix}:run:{id}:spend`), next to its tenant's spend for
the UTC day and everyone's spend for the day; the prefix is each process's own setting (the
same in every service of an installation), never part of a hop. Every LLM call first checks
all three against the limits the run's hop carries (set by the worker), then adds what it
used. So the research calls of one run, on any number of agent replicas, share the run's
remaining budget, and a tenant's daily cap holds across runs.

A charge answers with the three totals it leaves, everyone's spend included, and the next
call in the same scope (a hop, such as one research call's tool loop) checks those instead
of reading them again: one round trip per LLM call after the first.

A check and the charge after the call are not one atomic step: calls running in parallel
may each pass the check and together overshoot by at most one call each. That is the price
of not serialising a run's fan-out; the overshoot is bounded by the fan-out width times
one call's `max_tokens`. Checking the totals of a scope's last charge keeps that bound:
what others spent since then can let one more call of this scope through, whose charge
then sees it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import Counter

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.errors import BudgetExceeded
from podcrew_core.contracts.schemas import Usage
from podcrew_core.runtime.redis import RedisClient, is_cluster

_MICRO = 1_000_000
_SECONDS_PER_DAY = 86_400
_DAY_TTL_S = 3 * _SECONDS_PER_DAY

BUDGET_REFUSALS = Counter(
    "podcrew_budget_exceeded",
    "LLM calls refused because a budget was spent, by budget (run_tokens, run_cost, "
    "tenant_tokens, tenant_cost, global_cost).",
    ["budget"],
)


@lru_cache(maxsize=2)
def _day_name(day: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(day * _SECONDS_PER_DAY))


def utc_day(now: float | None = None) -> str:
    """The UTC date of `now` (default: the current time) as `YYYYMMDD`. POSIX time has no
    leap seconds, so the day is `now // 86400`; its name is formatted once per day, not on
    each of the two ledger round trips of every LLM call."""
    return _day_name(int((time.time() if now is None else now) // _SECONDS_PER_DAY))


@dataclass(frozen=True)
class Spend:
    tokens: int = 0
    cost_usd: float = 0.0


# The charge is the one deviation from redis-py's normal API here: one EVALSHA instead of a
# MULTI pipeline of nine commands (HINCRBY tokens, HINCRBY micro-dollars, EXPIRE, for each of
# the three counters), because redis-py builds and parses every command of a pipeline, on
# every LLM call. `uv run python -m bench.luabench` (2026-12-06, this machine) measured client
# plus Redis CPU per charge 59-74 us as Lua and 146-164 us as the pipeline: 8 LLM calls per
# run make it 0.7 ms per run, 3-4 % of a run's CPU in `make bench` (18-23 ms). The check,
# measured the same way, saved 20-35 us as Lua, 0.1-0.2 ms over a run's ~5 checks (under
# 1 %): it reads the counters with redis-py's pipeline.
_CHARGE = """
local out = {}
for i, key in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('HINCRBY', key, 'tokens', ARGV[1])
  out[2 * i] = redis.call('HINCRBY', key, 'micro_usd', ARGV[2])
  redis.call('EXPIRE', key, ARGV[3])
end
return out
"""

Totals = tuple[Spend, Spend, Spend]  # the run, its tenant today, everyone today


def _totals(counts: list[Any]) -> Totals:
    run, tenant, everyone = (
        Spend(int(counts[i] or 0), int(counts[i + 1] or 0) / _MICRO) for i in (0, 2, 4)
    )
    return run, tenant, everyone


class Ledger:
    """Spend counters in Redis (integer micro-dollars, so increments stay exact), under
    `prefix`: the orchestrator's `key_prefix`, which every service of an installation sets
    alike."""

    def __init__(self, redis: RedisClient, prefix: str = "podcrew") -> None:
        self.redis = redis
        self.prefix = prefix
        self._charge = redis.register_script(_CHARGE)
        self._cluster = is_cluster(redis)

    # Every key the ledger writes is built here (docs/architecture.md lists them).
    def _keys(self, limits: BudgetLimits) -> tuple[str, str, str]:
        day, prefix = utc_day(), self.prefix
        return (
            f"{prefix}:run:{limits.run_id}:spend",
            f"{prefix}:spend:{day}:tenant:{limits.tenant}",
            self._everyone(day),
        )

    def _everyone(self, day: str) -> str:
        return f"{self.prefix}:spend:{day}:all"

    async def spent_by_everyone_today(self) -> Spend:
        """What every tenant has spent today: the counter the daily spend cap binds."""
        tokens, micro = await self.redis.hmget(self._everyone(utc_day()), "tokens", "micro_usd")
        return Spend(int(tokens or 0), int(micro or 0) / _MICRO)

    async def spent(self, limits: BudgetLimits) -> Totals:
        """What the run, its tenant today and everyone today have spent, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._keys(limits):
                pipe.hmget(key, "tokens", "micro_usd")
            counts: list[list[Any]] = await pipe.execute()
        return _totals([count for pair in counts for count in pair])

    async def check(self, limits: BudgetLimits, totals: Totals | None = None) -> None:
        """Refuse the next call if any budget is already spent: by `totals` when given (what
        a charge answered), else by the totals read now."""
        run, tenant, everyone = totals if totals is not None else await self.spent(limits)
        # Checked in this order; a refusal's detail is formatted only when one is refused.
        if run.tokens >= limits.max_tokens:
            name = "run_tokens"
            detail = f"the run used {run.tokens} of its {limits.max_tokens} tokens"
        elif run.cost_usd >= limits.max_cost_usd:
            name = "run_cost"
            detail = f"the run spent ${run.cost_usd:.4f} of its ${limits.max_cost_usd:.4f}"
        elif tenant.tokens >= limits.tenant_daily_tokens:
            name = "tenant_tokens"
            detail = (
                f"tenant {limits.tenant} used its {limits.tenant_daily_tokens} tokens for today"
            )
        elif tenant.cost_usd >= limits.tenant_daily_cost_usd:
            name = "tenant_cost"
            detail = (
                f"tenant {limits.tenant} spent its ${limits.tenant_daily_cost_usd:.2f} for today"
            )
        elif everyone.cost_usd >= limits.global_daily_cost_usd:
            name = "global_cost"
            detail = f"the daily spend cap of ${limits.global_daily_cost_usd:.2f} is reached"
        else:
            return
        BUDGET_REFUSALS.labels(name).inc()
        raise BudgetExceeded(detail, budget=name)

    async def charge(self, limits: BudgetLimits, usage: Usage) -> Totals:
        """Add a call's tokens and cost to all three counters, in one atomic round trip;
        the totals after it."""
        tokens, micro = usage.total_tokens, round(usage.cost_usd * _MICRO)
        args = (tokens, micro, _DAY_TTL_S)
        if not self._cluster:
            return _totals(await self._charge(keys=self._keys(limits), args=args))
        # In a Redis Cluster the three counters are in three hash slots, which one script
        # may not touch: each is charged atomically on its own, at the same time.
        counts = await asyncio.gather(
            *(self._charge(keys=[key], args=args) for key in self._keys(limits))
        )
        return _totals([count for pair in counts for count in pair])


@dataclass
class BudgetScope:
    """The spend of one hop's LLM calls: what they check and charge, and the totals the
    last charge answered (which the next call checks instead of reading them again)."""

    ledger: Ledger
    limits: BudgetLimits
    totals: Totals | None = None

    async def check(self) -> None:
        await self.ledger.check(self.limits, self.totals)

    async def charge(self, usage: Usage) -> None:
        self.totals = await self.ledger.charge(self.limits, usage)
