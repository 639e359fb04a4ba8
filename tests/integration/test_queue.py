"""The run queue's semantics against a real redis-server, and partitioned across a real
Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis, RedisCluster

from podcrew_cli.topology import RedisClusterGroup
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.queue import Delivery, RunQueue

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


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis Cluster: three primaries, a replica each."""
    group = RedisClusterGroup(tmp_path_factory.mktemp("cluster"))
    group.start()
    try:
        yield group.env()["PODCREW_REDIS_URL"]
    finally:
        group.stop()


PARTITIONS = 6


async def _partitioned(url: str, consumer: str) -> RunQueue:
    keys = Keys("t", PARTITIONS, tagged=True)
    queue = RunQueue(RedisCluster.from_url(url, decode_responses=True), keys, consumer)
    await queue.ensure_group()
    return queue


async def test_partitions_spread_over_the_shards_and_each_keeps_the_queue_semantics(
    cluster_url: str,
) -> None:
    a = await _partitioned(cluster_url, "a")
    b = await _partitioned(cluster_url, "b")
    keys = a.keys
    nodes = {a.redis.get_node_from_key(stream).name for stream in keys.queues}
    assert len(nodes) > 1  # the partitions are not all on one shard
    for i in range(30):
        await a.redis.xadd(keys.queue_of(i % PARTITIONS), {"run_id": f"r{i}"})
    # One consumer reads every partition, never more than it asks for.
    got: list[Delivery] = []
    while len(got) < 30:
        batch = await a.read(count=7, block_ms=100)
        assert 0 < len(batch) <= 7
        got += batch
    assert sorted(d.run_id for d in got) == sorted(f"r{i}" for i in range(30))
    assert {d.stream for d in got} == set(keys.queues)
    assert await a.depth() == (0, 30)
    # Acknowledged entries are trimmed, partition by partition; pending ones stay.
    held = [d for d in got if d.run_id in ("r0", "r1")]
    for d in got:
        if d not in held and d.run_id != "r2":
            await a.ack(d)
    poison = next(d for d in got if d.run_id == "r2")
    await a.dead_letter(poison, "too many deliveries")
    dead = await a.redis.xrange(keys.dead_letter_of(2))
    assert [e[1]["run_id"] for e in dead] == ["r2"]
    await a.trim()
    assert await a.depth() == (0, 2)
    # The live consumer's heartbeat keeps r0; r1, not heartbeaten, goes to another worker.
    keep = next(d for d in held if d.run_id == "r0")
    for _ in range(3):
        await asyncio.sleep(0.2)
        await a.heartbeat([keep])
    reclaimed = await b.reclaim(min_idle_s=0.5, count=10)
    assert [(d.run_id, d.deliveries) for d in reclaimed] == [("r1", 2)]
    await b.ack(reclaimed[0])
    await a.ack(keep)
    await a.trim()
    left = sum([await a.redis.xlen(stream) for stream in keys.queues])
    assert left == 0 and await a.depth() == (0, 0)
    await a.redis.aclose()
    await b.redis.aclose()
