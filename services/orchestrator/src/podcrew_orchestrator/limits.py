"""Per-tenant limits shared by every API replica through Redis.

Requests per minute use GCRA (the generic cell rate algorithm): one key per tenant holding
the "theoretical arrival time", updated atomically in Lua with Redis' own clock, so every
replica sees one limit and clock skew between pods does not matter. Concurrent runs are a
sorted set of the tenant's unfinished runs, each scored by the time past which that run
cannot still be running (its own deadline times its deliveries: a batch run's is hours, an
interactive run's minutes); the final status transition removes a run (see store.py), and
entries past that time are swept, so a lost update cannot leak capacity for ever and a long
batch run keeps its place for as long as it runs.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from podcrew_core.contracts.errors import RateLimited
from podcrew_core.runtime.redis import RedisClient
from podcrew_orchestrator.keys import Keys

__all__ = ["RateLimited", "TenantLimiter", "TenantLimits"]


class TenantLimits(BaseModel):
    tenant_class: str = Field(
        default="standard",
        pattern=r"^[a-z0-9-]{1,32}$",
        description="Group of tenants in cost metrics (a label: keep the set of classes small).",
    )
    requests_per_minute: int = Field(default=120, ge=1, description="Run submissions a minute.")
    burst: int = Field(default=20, ge=1, description="Submissions allowed at once above the rate.")
    concurrent_runs: int = Field(default=20, ge=1, description="Unfinished runs at once.")
    daily_tokens: int = Field(default=5_000_000, ge=0, description="Tokens a UTC day.")
    daily_cost_usd: float = Field(default=50.0, ge=0, description="Spend a UTC day.")


# Both limits in one step, one round trip per submission: first the rate (GCRA), then the
# concurrent runs. A submission refused for concurrency has used up its place in the rate,
# as when these were two steps.
# KEYS: the tenant's GCRA key, the tenant's active-run set. ARGV: emission interval ms,
# burst, run id, the run's longest life ms, concurrent-run limit.
# Returns {1, 0} admitted, {0, wait_ms} over the rate, {-1, 0} at the concurrency limit.
_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - burst * interval
if now < allow_at then return {0, allow_at - now} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {-1, 0} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
return {1, 0}
"""


class TenantLimiter:
    def __init__(self, redis: RedisClient, keys: Keys, max_run_age_s: float) -> None:
        """`max_run_age_s`: how long a run may live when its submission says nothing else."""
        self.redis = redis
        self.keys = keys
        self.max_run_age_s = max_run_age_s
        self._admit = redis.register_script(_ADMIT)

    async def admit(
        self, tenant: str, run_id: str, limits: TenantLimits, max_age_s: float | None = None
    ) -> None:
        """Count a submission against the tenant's rate and hold one of its concurrent-run
        places for `run_id` for at most `max_age_s` (the run's longest life), or raise
        `RateLimited` (with Retry-After) for the first limit it is over."""
        life_s = self.max_run_age_s if max_age_s is None else max_age_s
        admitted, wait_ms = await self._admit(
            keys=[self.keys.rate(tenant), self.keys.active(tenant)],
            args=[
                60_000 / limits.requests_per_minute,
                limits.burst,
                run_id,
                math.ceil(life_s * 1000),
                limits.concurrent_runs,
            ],
        )
        if admitted == 0:
            wait_s = max(1, math.ceil(float(wait_ms) / 1000))
            raise RateLimited(
                f"tenant {tenant} is over {limits.requests_per_minute} runs a minute",
                headers={"Retry-After": str(wait_s)},
            )
        if admitted < 0:
            raise RateLimited(
                f"tenant {tenant} already has {limits.concurrent_runs} unfinished runs",
                headers={"Retry-After": "5"},
            )

    async def release_run(self, tenant: str, run_id: str) -> None:
        await self.redis.zrem(self.keys.active(tenant), run_id)
