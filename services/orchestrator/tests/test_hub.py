"""The event hub against a real redis-server: every subscriber gets its run's events once and
in order, over one blocked read per process, through overflows, late joins and restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import podcrew_orchestrator.hub as hub_module
from podcrew_core.contracts.schemas import EventType, Run, RunStatus
from podcrew_orchestrator.hub import EventHub, InvalidStreamId, StreamUnreadable, Subscription
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunEvent, RunStore
from podcrew_orchestrator.submit import budget_caps

pytestmark = pytest.mark.integration  # a real redis-server

MakeHub = Callable[..., EventHub]
KEYS = Keys("test")
BUDGET = budget_caps(OrchestratorSettings())


@pytest.fixture
def store(redis: Redis) -> RunStore:
    return RunStore(redis, KEYS, ttl_s=3600)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


async def _publish(store: RunStore, run_id: str, n: int, *, final: bool = False) -> list[str]:
    ids = [await store.publish(run_id, EventType.WRITER_DELTA, {"n": i}) for i in range(n)]
    if final:
        ids.append(await store.publish(run_id, EventType.RUN_SUCCEEDED))
    return ids


async def _to_the_end(subscription: Subscription) -> list[str]:
    """Ids of the events up to the final one."""
    seen: list[RunEvent] = []
    while not seen or not seen[-1].terminal:
        batch = await asyncio.wait_for(subscription.next(), 10)
        assert batch, "the subscription ended before the final event"
        seen += batch
    return [event.id for event in seen]


async def _blocked_reads(redis: Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"])


async def test_every_subscriber_gets_its_runs_events_once_in_order_over_one_read(
    make_hub: MakeHub, store: RunStore, redis: Redis
) -> None:
    hub = make_hub()
    runs = [_run_id() for _ in range(25)]
    first = {run_id: (await _publish(store, run_id, 1))[0] for run_id in runs}
    async with asyncio.TaskGroup() as group:
        # Two subscribers per run: one from the start, one from the first event on.
        followers = []
        for run_id in runs:
            for after in ("0", first[run_id]):
                followers.append((run_id, after, group.create_task(_follow(hub, run_id, after))))
        await asyncio.sleep(0.2)
        assert hub.watched == len(runs)
        assert hub.connections == 1
        assert await _blocked_reads(redis) == 1  # 50 waiting subscribers, one blocked read
        for _ in range(3):  # interleaved across runs
            for run_id in runs:
                await _publish(store, run_id, 1)
        for run_id in runs:
            await _publish(store, run_id, 0, final=True)
    for run_id, after, task in followers:
        everything = [e.id for e in await store.read_events(run_id, "0")]
        expected = everything if after == "0" else everything[1:]
        assert task.result() == expected
    assert hub.watched == 0


async def _follow(hub: EventHub, run_id: str, after: str) -> list[str]:
    async with hub.subscribe(run_id, after) as subscription:
        return await _to_the_end(subscription)


async def test_a_run_subscribed_while_the_reader_blocks_is_read_at_once(
    make_hub: MakeHub, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "READ_BLOCK_MS", 4_000)
    hub = make_hub()
    async with hub.subscribe(_run_id()):
        await asyncio.sleep(0.3)  # the reader blocks on the first run's stream
        later = _run_id()
        async with hub.subscribe(later) as subscription:
            started = time.monotonic()
            await _publish(store, later, 1)
            assert len(await asyncio.wait_for(subscription.next(), 10)) == 1
            assert time.monotonic() - started < 1.0  # woken, not left to its 4 s block


async def test_runs_beyond_one_readers_share_get_another_reader(
    make_hub: MakeHub, store: RunStore
) -> None:
    hub = make_hub(streams_per_reader=2)
    runs = [_run_id() for _ in range(5)]
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_follow(hub, run_id, "0")) for run_id in runs]
        await asyncio.sleep(0.2)
        assert hub.connections == 3
        published = [await _publish(store, run_id, 2, final=True) for run_id in runs]
    assert [task.result() for task in tasks] == published


async def test_a_slow_subscriber_reads_again_what_overflowed_its_buffer(
    make_hub: MakeHub, store: RunStore
) -> None:
    hub = make_hub(max_buffered=3)
    run_id = _run_id()
    overflows = _metric("podcrew_event_hub_overflows_total")
    async with hub.subscribe(run_id) as slow, hub.subscribe(run_id) as fast:
        published = await _publish(store, run_id, 20, final=True)
        assert await _to_the_end(fast) == published  # the reader has handed everything out
        assert slow.buffered <= 3
        assert await _to_the_end(slow) == published
    assert _metric("podcrew_event_hub_overflows_total") > overflows


async def test_a_subscriber_behind_the_reader_reads_the_gap_itself(
    make_hub: MakeHub, store: RunStore
) -> None:
    hub = make_hub()
    run_id = _run_id()
    async with hub.subscribe(run_id) as early:
        before = await _publish(store, run_id, 5)
        seen: list[RunEvent] = []
        while len(seen) < 5:
            seen += await asyncio.wait_for(early.next(), 10)
        async with hub.subscribe(run_id) as late:  # from the start, the reader is past it
            after = await _publish(store, run_id, 2, final=True)
            assert await _to_the_end(late) == before + after
        assert await _to_the_end(early) == after


async def test_the_hub_reads_on_from_its_cursors_after_redis_restarts(
    store: RunStore, redis_server: Any
) -> None:
    # A client that does not retry by itself: the hub's own reconnecting is what is tested.
    redis = Redis.from_url(redis_server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    hub = EventHub(redis, Keys("test"))
    run_id = _run_id()
    errors = _metric("podcrew_event_hub_read_errors_total")
    try:
        async with hub.subscribe(run_id) as subscription:
            before = await _publish(store, run_id, 3)
            redis_server.stop()
            await asyncio.sleep(0.5)  # the reader fails and backs off
            redis_server.start()
            after = await _publish(store, run_id, 3, final=True)
            assert await _to_the_end(subscription) == before + after
        assert _metric("podcrew_event_hub_read_errors_total") > errors
    finally:
        await hub.aclose()
        await redis.aclose()


async def test_a_run_nobody_follows_any_more_is_forgotten(
    make_hub: MakeHub, store: RunStore, redis: Redis
) -> None:
    hub = make_hub()
    run_id = _run_id()
    streams = _metric("podcrew_event_hub_streams")
    async with hub.subscribe(run_id) as subscription:
        assert _metric("podcrew_event_hub_streams") == streams + 1
        waiting = asyncio.create_task(subscription.next())
        await asyncio.sleep(0.1)
        waiting.cancel()  # a client that went away
    assert hub.watched == 0
    assert _metric("podcrew_event_hub_streams") == streams

    task = asyncio.create_task(_follow(hub, _run_id(), "0"))
    await asyncio.sleep(0.1)
    assert hub.watched == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert hub.watched == 0
    # With nothing to watch the reader gives its connection back after its block.
    deadline = time.monotonic() + hub_module.READ_BLOCK_MS / 1000 + 2
    while await _blocked_reads(redis):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _queued(store: RunStore) -> Run:
    run = Run(
        id=_run_id(),
        status=RunStatus.QUEUED,
        question="q",
        budget=BUDGET,
        created_at=datetime.now(UTC),
    )
    await store.create(run)
    return run


async def _finish(store: RunStore, run: Run) -> None:
    done = run.model_copy(update={"status": RunStatus.SUCCEEDED})
    assert await store.transition(done, EventType.RUN_SUCCEEDED)


async def test_wait_final_sees_the_end_of_a_run_whenever_it_came(
    make_hub: MakeHub, store: RunStore, redis: Redis
) -> None:
    hub = make_hub()
    finished = await _queued(store)
    await _finish(store, finished)
    assert await hub.wait_final(finished.id, 5)  # before the wait: read in its status

    later = await _queued(store)
    waiter = asyncio.create_task(hub.wait_final(later.id, 5))
    await asyncio.sleep(0.1)
    await _publish(store, later.id, 30)  # progress does not end the wait
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await _finish(store, later)
    assert await asyncio.wait_for(waiter, 2)

    started = time.monotonic()
    assert not await hub.wait_final(_run_id(), 0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert hub.watched == 0  # waits watch no run stream
    assert await redis.xlen(KEYS.finished) == 2  # each run announced once, when it ended


async def test_waiters_share_one_blocked_read_of_the_finished_runs(
    make_hub: MakeHub, store: RunStore, redis: Redis
) -> None:
    hub = make_hub()
    runs = [await _queued(store) for _ in range(200)]
    waits = [asyncio.create_task(hub.wait_final(run.id, 10)) for run in runs]
    await asyncio.sleep(0.3)
    assert await _blocked_reads(redis) == 1
    for run in runs[::2]:
        await _finish(store, run)
    await asyncio.sleep(0.3)
    assert [w.done() for w in waits] == [True, False] * 100
    assert all(w.result() for w in waits[::2])
    for run in runs[1::2]:
        await _finish(store, run)
    assert all(await asyncio.wait_for(asyncio.gather(*waits), 5))


async def test_a_wait_sees_a_run_that_ended_while_redis_was_away(
    store: RunStore, redis_server: Any
) -> None:
    redis = Redis.from_url(redis_server.url, decode_responses=True, retry=Retry(NoBackoff(), 0))
    hub = EventHub(redis, KEYS)
    errors = _metric("podcrew_event_hub_read_errors_total")
    try:
        run = await _queued(store)
        waiter = asyncio.create_task(hub.wait_final(run.id, 20))
        await asyncio.sleep(0.2)
        redis_server.stop()
        await asyncio.sleep(0.3)  # the reader fails and backs off
        redis_server.start()
        # Announced before the reader is back: found in the status it reads again.
        await _finish(store, run)
        assert await asyncio.wait_for(waiter, 10)
        assert _metric("podcrew_event_hub_read_errors_total") > errors
    finally:
        await hub.aclose()
        await redis.aclose()


async def test_closing_the_hub_ends_every_wait(make_hub: MakeHub, store: RunStore) -> None:
    hub = make_hub()
    run = await _queued(store)
    waiter = asyncio.create_task(hub.wait_final(run.id, 30))
    await asyncio.sleep(0.2)
    await hub.aclose()
    assert not await asyncio.wait_for(waiter, 2)


BAD_CURSORS = ("99999999999999999999", "1-99999999999999999999", "abc", "-1", "1-", "1-2-3")


async def test_a_cursor_redis_would_refuse_is_refused_where_it_enters(
    make_hub: MakeHub, store: RunStore
) -> None:
    hub = make_hub()
    bad_run, good_run = _run_id(), _run_id()
    await _publish(store, bad_run, 1)
    for cursor in BAD_CURSORS:
        with pytest.raises(InvalidStreamId, match="stream id is <ms>-<seq> or <ms>"):
            async with hub.subscribe(bad_run, cursor):
                pass
    # The hub watches nothing for them, so another run's subscriber reads on undisturbed.
    async with hub.subscribe(good_run) as subscription:
        published = await _publish(store, good_run, 3, final=True)
        assert await _to_the_end(subscription) == published
    assert hub.watched == 0


async def test_a_stream_redis_refuses_ends_its_own_subscription_and_no_other(
    make_hub: MakeHub, store: RunStore, redis: Redis
) -> None:
    hub = make_hub()
    bad_run, good_run = _run_id(), _run_id()
    # Its key holds no stream: every XREAD that names it fails, as one with a bad cursor would.
    await redis.set(KEYS.events(bad_run), "not a stream")
    isolated = _metric("podcrew_event_hub_isolated_streams_total")
    async with hub.subscribe(bad_run) as bad, hub.subscribe(good_run) as good:
        assert hub.connections == 1  # both streams in the same read
        published = await _publish(store, good_run, 5)
        started = time.monotonic()
        with pytest.raises(StreamUnreadable):
            await asyncio.wait_for(bad.next(), 10)
        published += await _publish(store, good_run, 5, final=True)
        assert await _to_the_end(good) == published
        assert time.monotonic() - started < 2  # no backing off and reading again
        # A new subscriber of the same stream is refused again, still alone.
        async with hub.subscribe(bad_run) as again:
            with pytest.raises(StreamUnreadable):
                await asyncio.wait_for(again.next(), 10)
    assert _metric("podcrew_event_hub_isolated_streams_total") == isolated + 2
    assert hub.watched == 0
