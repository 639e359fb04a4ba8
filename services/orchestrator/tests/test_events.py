"""An event stream (`GET /v1/runs/{id}/events`) as the route follows it, against a real
redis-server: it rides out Redis going away, or ends resumably, never cut mid-body."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sse_starlette import ServerSentEvent

from podcrew_core.contracts.schemas import EventType, RunStatus
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.routes import _follow
from podcrew_orchestrator.store import RunStore

pytestmark = pytest.mark.integration  # a real redis-server

KEYS = Keys("test")


@pytest.fixture
async def fragile(redis_server: Any) -> AsyncIterator[Redis]:
    """A client that does not retry: a Redis error reaches the route at once."""
    client = Redis.from_url(redis_server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


async def _running_run(store: RunStore) -> str:
    run_id = f"run_{uuid.uuid4().hex}"
    await store.redis.hset(KEYS.run(run_id), "status", RunStatus.RUNNING.value)
    return run_id


async def _next(stream: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    return await asyncio.wait_for(anext(stream), 10)


async def _rest(stream: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    return [event async for event in stream]


def _closing(event: ServerSentEvent, reason: str) -> None:
    assert event.event == "stream.closing"
    assert event.id is None  # the client's Last-Event-ID keeps naming the last real event
    assert json.loads(str(event.data)) == {"reason": reason, "resume": True}


async def test_a_store_error_mid_stream_ends_it_resumably(
    fragile: Redis, redis: Redis, redis_server: Any
) -> None:
    store = RunStore(fragile, KEYS, ttl_s=3600)
    hub = EventHub(fragile, KEYS, max_buffered=2)
    try:
        run_id = await _running_run(store)
        first = await store.publish(run_id, EventType.RUN_STARTED)
        stream = _follow(store, hub, run_id, "0", anyio.Event())
        assert (await _next(stream)).id == first
        # More than the stream's buffer: what overflowed is read from Redis when the client
        # gets there, and Redis is gone by then.
        missed = [await store.publish(run_id, EventType.WRITER_DELTA) for _ in range(5)]
        await asyncio.sleep(0.5)
        redis_server.stop()
        _closing(await _next(stream), "state store unavailable")
        assert await _rest(stream) == []
    finally:
        await hub.aclose()
    redis_server.start()
    # The client reconnects with its Last-Event-ID and misses nothing.
    final = await RunStore(redis, KEYS, ttl_s=3600).publish(run_id, EventType.RUN_SUCCEEDED)
    hub = EventHub(redis, KEYS)
    try:
        resumed = _follow(RunStore(redis, KEYS, 3600), hub, run_id, first, anyio.Event())
        assert [e.id for e in await _rest(resumed)] == [*missed, final]
    finally:
        await hub.aclose()


async def test_a_stream_rides_out_a_redis_restart(
    fragile: Redis, redis: Redis, redis_server: Any
) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    hub = EventHub(fragile, KEYS)  # its reader reconnects by itself
    try:
        run_id = await _running_run(store)
        first = await store.publish(run_id, EventType.RUN_STARTED)
        stream = _follow(store, hub, run_id, "0", anyio.Event())
        assert (await _next(stream)).id == first
        redis_server.stop()
        await asyncio.sleep(0.5)
        redis_server.start()
        later = [await store.publish(run_id, EventType.WRITER_DELTA) for _ in range(3)]
        later.append(await store.publish(run_id, EventType.RUN_SUCCEEDED))
        assert [e.id for e in await _rest(stream)] == later
    finally:
        await hub.aclose()
    assert await redis.keys("test:hub:*") == []  # the hub's wake streams are gone with it


async def test_shutdown_ends_a_stream_resumably(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    hub = EventHub(redis, KEYS)
    try:
        run_id = await _running_run(store)
        first = await store.publish(run_id, EventType.RUN_STARTED)
        shutdown = anyio.Event()
        stream = _follow(store, hub, run_id, "0", shutdown)
        assert (await _next(stream)).id == first
        waiting = asyncio.ensure_future(_next(stream))
        await asyncio.sleep(0.1)
        shutdown.set()
        _closing(await waiting, "server shutting down")
        assert await _rest(stream) == []
        assert hub.watched == 0
    finally:
        await hub.aclose()


async def test_a_finished_run_streams_up_to_its_final_event_and_ends(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    hub = EventHub(redis, KEYS)
    try:
        run_id = await _running_run(store)
        ids = [await store.publish(run_id, EventType.WRITER_DELTA) for _ in range(3)]
        ids.append(await store.publish(run_id, EventType.RUN_CANCELLED))
        await redis.hset(KEYS.run(run_id), "status", RunStatus.CANCELLED.value)
        after_the_end = _follow(store, hub, run_id, ids[-1], anyio.Event())
        assert await _rest(after_the_end) == []
        await store.publish(run_id, EventType.WRITER_DELTA)  # a straggler after the end
        everything = _follow(store, hub, run_id, "0", anyio.Event())
        assert [e.id for e in await _rest(everything)] == ids
        assert hub.connections == 0  # served without the hub
    finally:
        await hub.aclose()


async def test_a_stream_redis_refuses_ends_without_asking_to_resume(redis: Redis) -> None:
    store = RunStore(redis, KEYS, ttl_s=3600)
    hub = EventHub(redis, KEYS)
    try:
        run_id = await _running_run(store)
        await redis.set(KEYS.events(run_id), "not a stream")  # every read of it is refused
        events = await asyncio.wait_for(_rest(_follow(store, hub, run_id, "0", anyio.Event())), 10)
        assert [e.event for e in events] == ["stream.closing"]
        assert json.loads(str(events[0].data)) == {
            "reason": "event stream unreadable",
            "resume": False,  # a reconnect would meet the same refusal
        }
    finally:
        await hub.aclose()
