"""The run queue's semantics against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.queue import RunQueue

pytestmark = pytest.mark.integration


async def _queue(url: str, consumer: str) -> RunQueue:
    queue = RunQueue(Redis.from_url(url, decode_responses=True), Keys("t"), consumer)
    await queue.ensure_group()
    return queue


async def test_trim_never_deletes_pending_or_undelivered_entries(redis_url: str) -> None:
    a = await _queue(redis_url, "a")
    ids = [await a.redis.xadd(a.keys.queue, {"run_id": f"r{i}"}) for i in range(10)]
    delivered = await a.read(count=6, block_ms=100)
    assert [d.run_id for d in delivered] == [f"r{i}" for i in range(6)]
    for d in delivered:
        if d.run_id != "r2":  # r2 stays pending, as if its worker were still busy
            await a.ack(d)
    removed = await a.trim()
    assert removed == 2  # r0, r1: acknowledged and older than the oldest pending entry
    left = [e[1]["run_id"] for e in await a.redis.xrange(a.keys.queue)]
    assert left == [f"r{i}" for i in range(2, 10)]
    await a.ack(delivered[2])
    await a.trim()
    left = [e[1]["run_id"] for e in await a.redis.xrange(a.keys.queue)]
    assert left == ["r6", "r7", "r8", "r9"]  # acknowledged gone, undelivered kept
    assert await a.depth() == (4, 0)
    assert ids
    await a.redis.aclose()


async def test_heartbeat_keeps_an_entry_from_being_reclaimed(redis_url: str) -> None:
    a = await _queue(redis_url, "a")
    b = await _queue(redis_url, "b")
    await a.redis.xadd(a.keys.queue, {"run_id": "live"})
    await a.redis.xadd(a.keys.queue, {"run_id": "dead"})
    held = await a.read(count=2, block_ms=100)
    live = next(d for d in held if d.run_id == "live")
    for _ in range(3):
        await asyncio.sleep(0.2)
        await a.heartbeat([live])
    reclaimed = await b.reclaim(min_idle_s=0.5, count=10)
    assert [d.run_id for d in reclaimed] == ["dead"]
    assert reclaimed[0].deliveries == 2  # heartbeats do not count as deliveries
    again = await a.reclaim(min_idle_s=0.0, count=10)
    assert {d.run_id: d.deliveries for d in again} == {"live": 2, "dead": 3}
    await a.redis.aclose()
    await b.redis.aclose()


async def test_dead_letter_moves_and_acknowledges(redis_url: str) -> None:
    a = await _queue(redis_url, "a")
    await a.redis.xadd(a.keys.queue, {"run_id": "poison"})
    (delivery,) = await a.read(count=1, block_ms=100)
    await a.dead_letter(delivery, "too many deliveries")
    dead = await a.redis.xrange(a.keys.dead_letter)
    assert dead[0][1]["run_id"] == "poison"
    assert dead[0][1]["reason"] == "too many deliveries"
    assert (await a.redis.xpending(a.keys.queue, a.keys.group))["pending"] == 0
    await a.redis.aclose()
