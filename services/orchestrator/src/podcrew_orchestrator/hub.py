"""One Redis reader per api process for the events of every followed run: `EventHub`.

Waiters (`POST /v1/runs?wait=`) and event streams (SSE) do not read Redis themselves: they
subscribe to a run's events from a cursor, and a reader task that XREAD BLOCKs on every
watched run stream at once, over a connection of its own, hands each new entry to the
subscribers of its run. A reader watches at most `streams_per_reader` streams (512; more
get another reader), which bounds what each XREAD sends and what Redis checks on every
wake-up: a thousand open event streams cost two connections and two blocked reads instead
of a thousand of each, and an event wakes only its own run's subscribers.

Nothing is lost or seen twice. A reader keeps one cursor per stream and moves it only after
handing entries out; after a Redis error it reconnects with backoff and reads on from the
same cursors. A subscriber that joins a stream the reader has already read past, or whose
bounded buffer overflows (a slow client), reads the gap itself with XRANGE from its own
cursor, then goes on with what the reader hands it; it skips what it has already returned.

A stream is watched only while someone subscribes to it, and a reader with nothing to watch
holds no connection.

One subscriber cannot stall the others that share its reader's XREAD. Cursors are checked
where they enter (`stream_id`: what Redis accepts as a stream id), and a read that Redis
still refuses (a bad argument, a key of another type) is not retried as it is: the reader
reads each of its streams alone once, ends the subscriptions of the streams Redis refuses
(their `next` raises `StreamUnreadable`) and reads on with the rest.

Waiters for a run's end (`wait_final`) do not watch its events: they read the finished-runs
stream, where the worker announces each run in the same Lua step that makes it final. One
XREAD over one key serves every waiter of the process, whatever their number.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError, ResponseError
from redis.typing import KeyT, StreamIdT

from podcrew_core.contracts.schemas import RunStatus
from podcrew_core.runtime.redis import RedisClient, dedicated
from podcrew_core.runtime.resilience import backoff_s
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.store import RunEvent

# Shorter than redis-py's socket timeout (5 s by default), which would cut a longer block
# with `TimeoutError: Timeout reading from ...`. A new stream is picked up at once anyway
# (`_Reader.wake`): the block only bounds how long a reader reads streams nobody watches.
READ_BLOCK_MS = 2_000
# A read that has not returned this long after its block ran out is on a dead connection
# (for when no socket timeout is configured): start over on a new one.
READ_STALL_S = 5.0
READ_COUNT = 100  # entries per stream per read
FINISHED_READ_COUNT = 1_000
STREAMS_PER_READER = 512
# Events one subscriber may have waiting; beyond, they are dropped and re-read from Redis
# when it gets there, so a slow client costs the api no more than this.
MAX_BUFFERED = 200
BACKFILL_COUNT = 200
RECONNECT_BASE_S = 0.1
RECONNECT_MAX_S = 5.0
WAKE_TTL_S = 3600
# Redis stream ids are two unsigned 64-bit numbers, `<ms>-<seq>`; `<ms>` alone means seq 0.
MAX_ID_PART = 2**64 - 1
_STREAM_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
VALID_STREAM_ID = (
    f"a stream id is <ms>-<seq> or <ms>, each a whole number from 0 to {MAX_ID_PART}, "
    "as in the id of an event the stream sent"
)

log = structlog.get_logger(__name__)

HUB_STREAMS = Gauge(
    "podcrew_event_hub_streams",
    "Run event streams the api's event hub follows now (runs with a waiter or an SSE client).",
    multiprocess_mode="livesum",
)
HUB_OVERFLOWS = Counter(
    "podcrew_event_hub_overflows",
    "Subscribers whose buffer overflowed (a slow client): dropped and re-read from Redis.",
)
HUB_READ_ERRORS = Counter(
    "podcrew_event_hub_read_errors",
    "Failed reads of the event hub (Redis away); it reconnects and reads on from its cursors.",
)


HUB_ISOLATED = Counter(
    "podcrew_event_hub_isolated_streams",
    "Streams whose read Redis refused: their subscriptions ended, the other streams read on.",
)


class InvalidStreamId(ValueError):
    """Not an id Redis accepts for a stream: malformed, or a part beyond 64 bits."""


class StreamUnreadable(Exception):
    """Redis refuses to read this subscription's stream from its cursor; reading again
    cannot help, so the subscription ends."""


def stream_id(value: str) -> tuple[int, int]:
    """`value` as a comparable (ms, seq) pair if Redis would accept it as a stream id;
    `1700000000000` stands for `1700000000000-0`. Raises `InvalidStreamId` otherwise."""
    match = _STREAM_ID.fullmatch(value)
    if match is None:
        raise InvalidStreamId(f"{value[:40]!r} is not a stream id: {VALID_STREAM_ID}")
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise InvalidStreamId(f"{value[:40]!r} is out of range: {VALID_STREAM_ID}")
    return ms, seq


def _order(entry_id: str) -> tuple[int, int]:
    """A stream id Redis wrote as a comparable pair (no need to check it)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One subscriber's view of one run's events after its cursor, from
    `EventHub.subscribe`: call `next` for each batch, in order."""

    def __init__(self, redis: RedisClient, key: str, after: str, *, max_buffered: int) -> None:
        self.key = key
        ms, seq = stream_id(after)  # a cursor Redis would refuse would fail the shared read
        self.cursor = f"{ms}-{seq}"  # the last event returned (or skipped)
        self._redis = redis
        self._max_buffered = max_buffered
        self._buffered: list[RunEvent] = []
        self._backfill_to: str | None = None  # events up to here are read from Redis first
        self._ready = asyncio.Event()
        self._closed = False
        self._failure: StreamUnreadable | None = None

    @property
    def buffered(self) -> int:
        """Events handed over by the reader and waiting here, in memory."""
        return len(self._buffered)

    def close(self) -> None:
        """End the subscription early (the server is shutting down): `next` returns []."""
        self._closed = True
        self._ready.set()

    def fail(self, failure: StreamUnreadable) -> None:
        """End the subscription: Redis refuses to read its stream. `next` raises `failure`."""
        self._failure = failure
        self.close()

    async def next(self) -> list[RunEvent]:
        """The next events after the cursor, waiting for them; [] once closed.

        Raises `RedisError` only when it has to read a gap itself and Redis is away, and
        `StreamUnreadable` when Redis refuses to read the stream at all."""
        while not self._closed:
            if self._backfill_to is not None:
                events = await self._backfill(self._backfill_to)
            elif self._buffered:
                events, self._buffered = self._buffered, []
            else:
                self._ready.clear()
                await self._ready.wait()
                continue
            after = _order(self.cursor)
            events = [e for e in events if _order(e.id) > after]
            if events:
                self.cursor = events[-1].id
                return events
        if self._failure is not None:
            raise self._failure
        return []

    def joined_behind(self, reader_cursor: str) -> None:
        """The reader has read the stream up to `reader_cursor`, past this cursor."""
        self._backfill_to = reader_cursor

    def deliver(self, events: list[RunEvent]) -> None:
        """Called by the reader with the stream's next entries."""
        if len(self._buffered) + len(events) > self._max_buffered:
            HUB_OVERFLOWS.inc()
            self._buffered.clear()
            self._backfill_to = events[-1].id
        else:
            self._buffered.extend(events)
        self._ready.set()

    async def _backfill(self, upto: str) -> list[RunEvent]:
        reply: Any = await self._redis.xrange(
            self.key, min=f"({self.cursor}", max=upto, count=BACKFILL_COUNT
        )
        # Done once caught up: fewer than asked means nothing is left up to `upto` (or the
        # stream expired). An overflow meanwhile has moved the mark on: keep going.
        if len(reply) < BACKFILL_COUNT and self._backfill_to == upto:
            self._backfill_to = None
        return RunEvent.from_entries(reply)


@dataclass(eq=False)
class _Watch:
    key: str
    cursor: str  # the reader has handed out every entry up to here
    reader: _Reader
    subscribers: set[Subscription] = field(default_factory=set)


class _BlockingReader:
    """A loop of blocking reads on a connection of its own, held only while `_busy`.

    After a Redis error (restarting, failing over, a dead connection) it backs off, takes a
    new connection, calls `_reconnected` and reads on."""

    redis: RedisClient
    _rng: random.Random
    _active: asyncio.Event  # set when it may have become busy, or is stopping
    _stopping: bool

    def _busy(self) -> bool:
        raise NotImplementedError

    async def _read(self, connection: RedisClient) -> None:
        raise NotImplementedError

    async def _reconnected(self, connection: RedisClient) -> None:
        """After an error, before reading again."""

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            if not self._busy():
                self._active.clear()
                await self._active.wait()
                continue
            try:
                async with dedicated(self.redis) as connection:  # released when idle
                    if failures:
                        await self._reconnected(connection)
                    while self._busy() and not self._stopping:
                        await self._read(connection)
                        failures = 0
            except (RedisError, TimeoutError) as exc:
                HUB_READ_ERRORS.inc()
                log.warning("event_hub_read_failed", error=repr(exc), failures=failures + 1)
            except Exception:  # a bug; a reader that died would leave its waiters hanging
                log.exception("event_hub_read_crashed")
            else:
                continue
            await self._back_off(failures)
            failures += 1

    async def _back_off(self, failures: int) -> None:
        """The jittered pause before trying Redis again after `failures` failures."""
        await asyncio.sleep(
            backoff_s(failures, None, base_s=RECONNECT_BASE_S, max_s=RECONNECT_MAX_S, rng=self._rng)
        )


class _Reader(_BlockingReader):
    """XREAD BLOCK over its watched streams, on a connection of its own while it has any.

    After a Redis error its cursors are where they were, so reading on from them loses and
    repeats nothing."""

    def __init__(
        self,
        redis: RedisClient,
        wake_key: str,
        rng: random.Random,
        drop: Callable[[_Watch, StreamUnreadable], None],
    ) -> None:
        self.redis = redis
        self.wake_key = wake_key
        self._drop = drop  # ends a stream's subscriptions and stops watching it
        self.watches: dict[str, _Watch] = {}
        self._rng = rng
        self._wake_cursor = "0-0"
        self._blocked = False  # in a read that does not include streams added since
        self._woken = False
        self._active = asyncio.Event()
        self._stopping = False
        self.task = asyncio.create_task(self._run(), name=f"event-hub-{wake_key}")

    def add(self, watch: _Watch) -> None:
        self.watches[watch.key] = watch
        self._active.set()

    async def wake(self) -> None:
        """Make a blocked read start over, to include the streams watched since it began.

        Why a wake stream of the reader's own, included in every read, rather than
        `CLIENT UNBLOCK` on the reader's connection id: it needs no more than the stream
        commands podcrew's Redis user already has (CLIENT is an admin command), there is
        no connection id to track across reconnects, and a wake cannot be missed: the
        reader reads the wake stream from a cursor, so a wake that reaches Redis before
        the read does still ends it at once.
        """
        if not self._blocked or self._woken:
            return
        self._woken = True
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"wake": "1"}, maxlen=1, approximate=False)
                pipe.expire(self.wake_key, WAKE_TTL_S)
                await pipe.execute()
        except RedisError:  # the reader fails too, and reads the current set when back
            self._woken = False
            log.debug("event_hub_wake_failed", exc_info=True)

    async def stop(self) -> None:
        """Stop reading for good."""
        # Not by cancelling alone: redis-py (8.1) can swallow a cancellation that lands as
        # a reply arrives, and carry on; the flag ends the loop after that read.
        self._stopping = True
        self._active.set()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def _busy(self) -> bool:
        return bool(self.watches)

    async def _read(self, connection: RedisClient) -> None:
        streams: dict[KeyT, StreamIdT] = {k: w.cursor for k, w in self.watches.items()}
        streams[self.wake_key] = self._wake_cursor
        self._blocked, self._woken = True, False
        try:
            async with asyncio.timeout(READ_BLOCK_MS / 1000 + READ_STALL_S):
                # redis-py types stream replies as a union of every shape; these are strings.
                reply: Any = await connection.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
        except ResponseError:
            # Redis answered, and refused: the same read would fail forever, for every
            # stream in it. Find the streams it refuses and read on without them.
            if not await self._isolate(connection):
                raise
            return
        finally:
            self._blocked = False
        for key, entries in reply or []:
            if key == self.wake_key:
                self._wake_cursor = entries[-1][0]
                continue
            watch = self.watches.get(key)
            if watch is None:  # nobody watches it any more
                continue
            events = RunEvent.from_entries(entries)
            watch.cursor = events[-1].id
            for subscriber in watch.subscribers:
                subscriber.deliver(events)

    async def _isolate(self, connection: RedisClient) -> bool:
        """Read each watched stream alone, once, without blocking; drop those Redis refuses.
        Whether any was dropped (if none was, the error is not one stream's)."""
        watches = list(self.watches.values())
        async with connection.pipeline(transaction=False) as pipe:
            for watch in watches:
                pipe.xread({watch.key: watch.cursor}, count=1)
            replies = await pipe.execute(raise_on_error=False)
        # A connection error raises out of `execute` (the reader backs off and reads again);
        # a ResponseError in the replies is Redis refusing that stream.
        refused = [
            (watch, reply)
            for watch, reply in zip(watches, replies, strict=True)
            if isinstance(reply, ResponseError)
        ]
        for watch, error in refused:
            HUB_ISOLATED.inc()
            log.warning("event_hub_stream_unreadable", stream=watch.key, error=repr(error))
            self._drop(watch, StreamUnreadable(f"the event stream cannot be read: {error}"))
        return bool(refused)


class _Waiter:
    __slots__ = ("finished", "woken")

    def __init__(self) -> None:
        self.finished = False  # the run was announced as finished
        self.woken = asyncio.Event()  # announced, or the reader asks for a fresh look


class _Finishes(_BlockingReader):
    """Waits for runs to end: one XREAD BLOCK on the finished-runs stream, while anyone waits.

    Why not each run's event stream, read as the SSE subscribers read it: a waiter needs only
    the end, and an XREAD over N run streams sends and checks N keys every time any of them
    gets an event. With hundreds of `?wait` requests that was a third of the api's CPU at 50
    concurrent runs (`python -m bench.profile --level 50`); one key read once per batch of
    finished runs costs the same whatever the number of waiters.

    Nothing is missed: a waiter is registered before it reads its run's status, and the
    status is written in the same Lua step as the announcement. So a run that ended before
    the reader's cursor is seen in its status, and one that ends later is read by the
    reader. After a Redis error the reader starts again from the stream's end (Redis may
    have come back without it) and every waiter reads its status again.
    """

    def __init__(
        self, redis: RedisClient, keys: Keys, rng: random.Random, partition: int = 0
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.stream = keys.finished_of(partition)
        self.waiters: dict[str, set[_Waiter]] = {}
        self._rng = rng
        self._cursor: str | None = None  # every announcement up to here has been handed out
        self._starting = asyncio.Lock()
        self._active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def wait(self, run_id: str, timeout_s: float) -> bool:
        if timeout_s <= 0 or self._stopping:
            return False
        waiter = _Waiter()
        self.waiters.setdefault(run_id, set()).add(waiter)
        failures = 0
        try:
            async with asyncio.timeout(timeout_s):
                while not self._stopping:
                    if waiter.finished:
                        return True
                    waiter.woken.clear()
                    try:
                        await self._start()
                        status = await self.redis.hget(self.keys.run(run_id), "status")
                    except RedisError as exc:
                        # Redis away for a moment: the run goes on, and so does the wait.
                        failures += 1
                        log.warning("wait_final_retry", error=repr(exc), failures=failures)
                        await self._back_off(failures)
                        continue
                    if status is not None and RunStatus(str(status)).terminal:
                        return True
                    await waiter.woken.wait()
        except TimeoutError:
            pass
        finally:
            waiters = self.waiters.get(run_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self.waiters[run_id]
        return False

    async def stop(self) -> None:
        self._stopping = True
        self._active.set()
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.woken.set()
        if self._task is not None:
            # Not by cancelling alone: redis-py can swallow a cancellation (see `_Reader`).
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _start(self) -> None:
        """Start reading from the stream's end, before the first waiter reads its status."""
        async with self._starting:
            if self._task is None:
                self._cursor = await self._end(self.redis)
                self._task = asyncio.create_task(self._run(), name="event-hub-finished")
        self._active.set()

    async def _end(self, redis: RedisClient) -> str:
        last: Any = await redis.xrevrange(self.stream, count=1)
        return str(last[0][0]) if last else "0-0"

    def _busy(self) -> bool:
        return bool(self.waiters)

    async def _reconnected(self, connection: RedisClient) -> None:
        self._cursor = await self._end(connection)
        for waiters in self.waiters.values():
            for waiter in waiters:
                waiter.woken.set()

    async def _read(self, connection: RedisClient) -> None:
        assert self._cursor is not None
        async with asyncio.timeout(READ_BLOCK_MS / 1000 + READ_STALL_S):
            reply: Any = await connection.xread(
                {self.stream: self._cursor}, count=FINISHED_READ_COUNT, block=READ_BLOCK_MS
            )
        for _, entries in reply or []:
            self._cursor = entries[-1][0]
            for _, fields in entries:
                for waiter in self.waiters.get(fields["run"], ()):
                    waiter.finished = True
                    waiter.woken.set()


class EventHub:
    """Run events for the api's waiters and event streams, read once per process."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        streams_per_reader: int = STREAMS_PER_READER,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.streams_per_reader = streams_per_reader
        self.max_buffered = max_buffered
        self._name = secrets.token_hex(6)  # this process' wake streams
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        # In a Redis Cluster one XREAD reads streams of one hash slot only: a reader follows
        # the runs of one queue partition (their keys share its slot), and so does each
        # partition's reader of finished runs.
        self._readers: dict[int, list[_Reader]] = {}  # by partition
        self._watches: dict[str, _Watch] = {}
        self._finishes: dict[int, _Finishes] = {}

    @property
    def watched(self) -> int:
        """Streams watched now."""
        return len(self._watches)

    @property
    def connections(self) -> int:
        """Readers, each with a connection of its own while it watches anything."""
        return len(self._all_readers())

    @asynccontextmanager
    async def subscribe(self, run_id: str, after: str = "0") -> AsyncIterator[Subscription]:
        """The run's events after `after` (a stream id; "0" for all), until the block exits."""
        subscription = Subscription(
            self.redis, self.keys.events(run_id), after, max_buffered=self.max_buffered
        )
        reader = self._watch(subscription, self.keys.partition_of(run_id))
        try:
            if reader is not None:
                await reader.wake()
            yield subscription
        finally:
            self._unwatch(subscription)

    async def wait_final(self, run_id: str, timeout_s: float) -> bool:
        """Wait until the run is final (True) or `timeout_s` passes (False). Redis errors
        meanwhile do not end the wait: it reads again once Redis is back."""
        partition = self.keys.partition_of(run_id)
        finishes = self._finishes.get(partition)
        if finishes is None:
            finishes = self._finishes[partition] = _Finishes(
                self.redis, self.keys, self._rng, partition
            )
        return await finishes.wait(run_id, timeout_s)

    async def aclose(self) -> None:
        """Stop reading; subscriptions still open end (their `next` returns []), and so do
        waits (they return False)."""
        for watch in self._watches.values():
            for subscription in watch.subscribers:
                subscription.close()
        await asyncio.gather(*(finishes.stop() for finishes in self._finishes.values()))
        readers = self._all_readers()
        await asyncio.gather(*(reader.stop() for reader in readers))
        if readers:
            try:
                await self.redis.delete(*(r.wake_key for r in readers))
            except RedisError:  # they expire on their own
                log.debug("event_hub_cleanup_failed", exc_info=True)

    def _watch(self, subscription: Subscription, partition: int) -> _Reader | None:
        """Add the subscriber; the reader that has to be woken for a new stream, if any."""
        watch = self._watches.get(subscription.key)
        if watch is not None:
            if _order(subscription.cursor) < _order(watch.cursor):
                subscription.joined_behind(watch.cursor)
            watch.subscribers.add(subscription)
            return None
        readers = self._readers.setdefault(partition, [])
        reader = next((r for r in readers if len(r.watches) < self.streams_per_reader), None)
        if reader is None:
            wake_key = self.keys.hub_wake(f"{self._name}:{len(readers)}", partition)
            reader = _Reader(self.redis, wake_key, self._rng, self._drop)
            readers.append(reader)
        watch = _Watch(subscription.key, subscription.cursor, reader, {subscription})
        self._watches[watch.key] = watch
        HUB_STREAMS.inc()
        reader.add(watch)
        return reader

    def _all_readers(self) -> list[_Reader]:
        return [reader for readers in self._readers.values() for reader in readers]

    def _drop(self, watch: _Watch, failure: StreamUnreadable) -> None:
        """Stop watching a stream Redis refuses to read, and end its subscriptions."""
        if self._watches.get(watch.key) is watch:
            HUB_STREAMS.dec()
            del self._watches[watch.key]
        watch.reader.watches.pop(watch.key, None)
        for subscription in watch.subscribers:
            subscription.fail(failure)
        watch.subscribers.clear()

    def _unwatch(self, subscription: Subscription) -> None:
        watch = self._watches.get(subscription.key)
        if watch is None or subscription not in watch.subscribers:  # dropped already
            return
        watch.subscribers.discard(subscription)
        if not watch.subscribers:
            HUB_STREAMS.dec()
            del self._watches[watch.key]
            del watch.reader.watches[watch.key]
