"""Tenant limits against a real redis-server: the rate and the concurrent runs are checked in
one step, in that order, each refusing with its own message and Retry-After."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import RateLimited, TenantLimiter, TenantLimits

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")


async def test_rate_is_checked_before_concurrency(redis: Redis) -> None:
    limiter = TenantLimiter(redis, KEYS, max_run_age_s=3600)
    limits = TenantLimits(requests_per_minute=1, burst=2, concurrent_runs=1)
    await limiter.admit("t", "run_1", limits)
    with pytest.raises(RateLimited, match="already has 1 unfinished runs") as full:
        await limiter.admit("t", "run_2", limits)
    assert full.value.headers == {"Retry-After": "5"}
    # The refused submission used up the burst: the next is over the rate, whatever the runs.
    await limiter.release_run("t", "run_1")
    with pytest.raises(RateLimited, match="over 1 runs a minute") as fast:
        await limiter.admit("t", "run_3", limits)
    assert 1 <= int(fast.value.headers["Retry-After"]) <= 60
    assert await redis.zrange(KEYS.active("t"), 0, -1) == []


async def test_admitted_runs_hold_places_until_released(redis: Redis) -> None:
    limiter = TenantLimiter(redis, KEYS, max_run_age_s=3600)
    limits = TenantLimits(requests_per_minute=600, burst=10, concurrent_runs=2)
    await limiter.admit("t", "run_1", limits)
    await limiter.admit("t", "run_2", limits)
    assert sorted(await redis.zrange(KEYS.active("t"), 0, -1)) == ["run_1", "run_2"]
    await limiter.release_run("t", "run_1")
    await limiter.admit("t", "run_3", limits)
    assert sorted(await redis.zrange(KEYS.active("t"), 0, -1)) == ["run_2", "run_3"]


async def test_a_run_holds_its_place_for_its_own_life(redis: Redis) -> None:
    """A place is swept once its run cannot still be running, by that run's own life: a
    short one goes, a long (batch) one admitted before it stays."""
    limiter = TenantLimiter(redis, KEYS, max_run_age_s=3600)
    limits = TenantLimits(requests_per_minute=600, burst=10, concurrent_runs=2)
    await limiter.admit("t", "batch", limits, max_age_s=86_400 * 5)
    await limiter.admit("t", "short", limits, max_age_s=0.05)
    with pytest.raises(RateLimited, match="already has 2 unfinished runs"):
        await limiter.admit("t", "third", limits)
    await asyncio.sleep(0.1)
    await limiter.admit("t", "third", limits)
    assert sorted(await redis.zrange(KEYS.active("t"), 0, -1)) == ["batch", "third"]
