"""The webhook outbox: every final run that names a `callback_url` is announced once.

A run becomes final in one of three places: the worker's final transition, the api's
`DELETE` (cancelled), or the api itself when the result cache answers a submission. Each of
those writes the run's final state and its outbox entry in one atomic step
(`RunStore.transition`, `RunStore.create_finished`), so a run is final with its
announcement owed, or not final at all, whatever process stops in between.

Workers read the outbox as a consumer group, with the run queue's semantics
(`podcrew_orchestrator.queue.RunQueue`): an entry stays pending until its delivery has ended
(delivered, rejected, refused or given up), a live worker heartbeats the entries it is
delivering, and a stopped worker's entries are taken over once idle. A delivery taken over
carries the same `Podcrew-Delivery` id, derived from the run id, so the rare POST that
reached the receiver just before its worker died is recognisable as a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import orjson
import structlog
from redis.exceptions import RedisError

from podcrew_core.runtime.redis import RedisClient
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.webhooks import WebhookSender

log = structlog.get_logger(__name__)

# Delivery ids are UUIDv5 of the run id in this namespace: one id per run, on every attempt
# and in every process.
_DELIVERY_NAMESPACE: Final = uuid.UUID("0b5c3a4e-8f1d-4f7e-9a51-6c2d7e3f9b10")
# Longer than any wait between two heartbeats of a live deliverer (a third of this), so
# only the entries of a stopped worker are taken over.
DEFAULT_CLAIM_IDLE_S: Final = 60.0
DEFAULT_CONCURRENCY: Final = 64
READ_BLOCK_MS: Final = 1000
_REDIS_RETRY_S: Final = 1.0

LoadRun = Callable[[str], Awaitable[str | None]]


def delivery_id(run_id: str) -> str:
    """The `Podcrew-Delivery` id of the run's webhook."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, run_id))


class WebhookOutbox:
    """Delivers the outbox's entries with `sender`, at most `concurrency` at once; `load`
    reads a run's stored JSON (the body every delivery sends)."""

    def __init__(
        self,
        outbox: RunQueue,
        load: LoadRun,
        sender: WebhookSender,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        claim_idle_s: float = DEFAULT_CLAIM_IDLE_S,
    ) -> None:
        self.outbox = outbox
        self.load = load
        self.sender = sender
        self.concurrency = concurrency
        self.claim_idle_s = claim_idle_s
        # The entries being delivered, by `Delivery.key`, with their delivery tasks.
        self._held: dict[str, tuple[Delivery, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Deliver until `drain`; Redis going away pauses the outbox, never ends it."""
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.claim_idle_s / 3
                    await self._housekeeping()
                await self._read()
            except RedisError as exc:
                log.warning("webhook_outbox_unavailable", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _REDIS_RETRY_S)

    async def drain(self, grace_s: float) -> None:
        """Stop taking entries; let deliveries under way finish within `grace_s`. Those
        that do not stay pending, for another worker (or this one, restarted) to finish."""
        self._stopping.set()
        tasks = [task for _, task in self._held.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _housekeeping(self) -> None:
        """Keep this worker's entries claimed, take over a stopped worker's, drop the
        entries whose delivery has ended."""
        await self.outbox.ensure_group()
        await self.outbox.heartbeat([entry for entry, _ in self._held.values()])
        free = self.concurrency - len(self._held)
        if free > 0:
            for entry in await self.outbox.reclaim(self.claim_idle_s, free):
                self._start(entry)
        await self.outbox.trim()

    async def _read(self) -> None:
        free = self.concurrency - len(self._held)
        if free <= 0:
            await asyncio.sleep(0.05)
            return
        for entry in await self.outbox.read(free, READ_BLOCK_MS):
            self._start(entry)

    def _start(self, entry: Delivery) -> None:
        if entry.key in self._held:
            return
        task = asyncio.create_task(self._deliver(entry), name=f"webhook-{entry.run_id}")
        self._held[entry.key] = (entry, task)
        task.add_done_callback(lambda _: self._held.pop(entry.key, None))

    async def _deliver(self, entry: Delivery) -> None:
        """Deliver one entry's run and acknowledge the entry once the delivery has ended.
        A run that expired before its turn has nothing left to send."""
        try:
            body = await self.load(entry.run_id)
            url = orjson.loads(body).get("callback_url") if body else None
            if body and url:
                with structlog.contextvars.bound_contextvars(run_id=entry.run_id):
                    await self.sender.deliver(url, body.encode(), delivery_id(entry.run_id))
            await self.outbox.ack(entry)
        except RedisError as exc:  # left pending: taken over and delivered again later
            log.warning("webhook_outbox_unavailable", run_id=entry.run_id, error=str(exc))


def outbox_queue(redis: RedisClient, keys: Keys, consumer: str) -> RunQueue:
    """The outbox of every partition, read as the run queue is."""
    streams = [keys.webhooks_of(p) for p in range(keys.partitions)]
    return RunQueue(redis, keys, consumer, streams=streams, group=keys.webhooks_group)


@contextlib.asynccontextmanager
async def delivering(
    redis: RedisClient, keys: Keys, consumer: str, sender: WebhookSender | None, grace_s: float
) -> AsyncIterator[None]:
    """The worker's outbox, delivering while the block runs (nothing when `sender` is None:
    webhooks are off); on exit, deliveries under way get `grace_s` to finish."""
    if sender is None:
        yield
        return
    store = RunStore(redis, keys, ttl_s=0)
    deliverer = WebhookOutbox(outbox_queue(redis, keys, consumer), store.get_json, sender)
    task = asyncio.create_task(deliverer.run(), name="webhook-outbox")
    try:
        yield
    finally:
        await deliverer.drain(grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
