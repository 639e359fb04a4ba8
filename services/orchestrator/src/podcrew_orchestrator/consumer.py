"""The queue consumer: the delivery lifecycle of the run queue in one worker process.

It reads entries while it has free slots, reclaims entries whose worker stopped
heartbeating, heartbeats the entries it holds, trims acknowledged entries, exports the
queue's depth and age, and polls the runs it executes for a client's cancellation. Each run
is handed to a `RunHandler` (the run executor) and its entry acknowledged only when the
handler says so: after the run's final state is stored. If this process dies, the runs it
held stop being heartbeaten and a live worker reclaims them after `claim_min_idle_s`.
On shutdown it drains: no new runs, a grace period for the running ones, then the rest are
handed back to the queue so another worker starts them at once.

A run that stopped because no agent could be reached (`AgentsUnreachable`) is handed back
too, and the worker's intake pauses (`IntakeGate`): it starts no run until a probe of the
agents' health succeeds, probing with a bounded back-off, so queued runs wait for an agent
instead of failing one after another while it restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from podcrew_core.contracts.schemas import EventType, RunStatus
from podcrew_core.runtime.logging import bind_run
from podcrew_core.runtime.redis import ReplicationTimeout
from podcrew_core.runtime.tracing import extract_context, invoke_agent_span
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore

RUNS_IN_FLIGHT = Gauge(
    "podcrew_worker_runs_in_flight",
    "Runs this worker is executing now.",
    multiprocess_mode="livesum",
)
# Every worker reads the same numbers from Redis: merge processes with max, not sum.
QUEUE_LAG = Gauge(
    "podcrew_queue_lag_entries",
    "Run-queue entries not yet delivered to any worker.",
    multiprocess_mode="livemax",
)
QUEUE_PENDING = Gauge(
    "podcrew_queue_pending_entries",
    "Run-queue entries delivered but not yet acknowledged.",
    multiprocess_mode="livemax",
)
QUEUE_OLDEST_AGE = Gauge(
    "podcrew_queue_oldest_age_seconds",
    "Age of the oldest run-queue entry by state: undelivered (waiting for a worker) or "
    "pending (delivered, not yet acknowledged); 0 when there is none.",
    ["state"],
    multiprocess_mode="livemax",
)
INTAKE_PAUSED = Gauge(
    "podcrew_worker_intake_paused",
    "1 while this worker starts no run because no agent answers (its runs wait in the queue).",
    multiprocess_mode="livemax",
)
RUNS_REQUEUED = Counter(
    "podcrew_runs_requeued",
    "Runs a worker handed back to the queue unfinished, by reason.",
    ["reason"],
)
SHUTDOWN = "worker-shutdown"
AGENT_UNREACHABLE = "agent-unreachable"
# The intake's probes of the agents while it is paused: first after this long, then twice as
# long each time, never longer apart than the maximum.
PROBE_FIRST_S = 0.5
PROBE_MAX_S = 5.0
# Depth and age are autoscaling and alerting signals: refreshed far more often than trimming.
QUEUE_METRICS_INTERVAL_S = 5.0
ORCHESTRATOR_AGENT = "orchestrator"

# How often one read of every held run's status looks for runs a client cancelled.
CANCEL_POLL_S = 0.5
READ_BLOCK_MS = 1000

log = structlog.get_logger(__name__)


class AgentsUnreachable(Exception):
    """A run stopped because no replica of an agent could be reached: hand it back."""


class IntakeGate:
    """Whether the worker may start runs: closed while no agent answers, and reopened by the
    first successful probe of `probe` (the names of the agents that do not answer)."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[list[str]]],
        *,
        first_s: float = PROBE_FIRST_S,
        max_s: float = PROBE_MAX_S,
    ) -> None:
        self.probe = probe
        self.first_s = first_s
        self.max_s = max_s
        self.opened = asyncio.Event()
        self.opened.set()
        self._prober: asyncio.Task[None] | None = None
        INTAKE_PAUSED.set(0)

    def close(self, reason: str) -> None:
        """Start no run until an agent answers again; `reason` is what failed."""
        if not self.opened.is_set():
            return
        self.opened.clear()
        INTAKE_PAUSED.set(1)
        log.warning("intake_paused", reason=reason, detail="runs stay queued until it answers")
        self._prober = asyncio.create_task(self._reopen(), name="intake-probe")

    async def _reopen(self) -> None:
        paused = time.monotonic()
        delay = self.first_s
        while True:
            await asyncio.sleep(delay)
            try:
                away = await self.probe()
            except Exception:  # a probe that failed is an agent still away
                away = ["unknown"]
            if not away:
                break
            delay = min(delay * 2, self.max_s)
            log.info("intake_still_paused", unreachable=away, next_probe_s=delay)
        INTAKE_PAUSED.set(0)
        log.info("intake_resumed", paused_s=round(time.monotonic() - paused, 1))
        self.opened.set()

    async def aclose(self) -> None:
        """Stop probing (shutdown)."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)


async def _nothing_away() -> list[str]:
    return []


async def _either(*events: asyncio.Event) -> None:
    """Wait until one of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class RunHandler(Protocol):
    """What the consumer hands each delivery to (the run executor)."""

    async def execute(self, delivery: Delivery) -> bool:
        """Run the delivery to its stored final state; True when it may be acknowledged."""
        ...

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for work the runs left running in the background."""
        ...


class QueueConsumer:
    """Consumes the run queue for one worker process, `worker_concurrency` runs at a time."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        store: RunStore,
        queue: RunQueue,
        handler: RunHandler,
        watch: CancelWatch,
        gate: IntakeGate | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.handler = handler
        self.watch = watch
        # No gate given: nothing to probe, so a pause ends at its first probe.
        self.gate = gate or IntakeGate(_nothing_away)
        self.held: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._intake_open = True
        self._intake_closed = asyncio.Event()
        self._unstarted: list[Delivery] = []  # read after intake closed: handed back as well

    @property
    def free_slots(self) -> int:
        return self.settings.worker_concurrency - len(self.held)

    async def drain(self, grace_s: float) -> None:
        """Graceful shutdown: take no new runs, give the running ones `grace_s` to finish,
        then hand the rest back to the queue (a new entry, the old one acknowledged, the run
        `queued` again with a `run.requeued` event) so another worker starts them at once
        instead of after `claim_min_idle_s`. Heartbeats go on meanwhile."""
        self._intake_open = False
        self._slot_freed.set()
        # Let a read in flight return first, so it cannot pick up the runs handed back.
        await asyncio.wait_for(self._intake_closed.wait(), READ_BLOCK_MS / 1000 + 1)
        running = [t for t in self._tasks if not t.done()]
        if running:
            log.info("worker_draining", runs=len(running), grace_s=grace_s)
            await asyncio.wait(running, timeout=grace_s)
        unfinished = {**dict(self.held), **{d.key: d for d in self._unstarted}}
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let webhooks in flight finish within what is left of the grace.
        await self.handler.settle(max(1.0, grace_s))
        await self.gate.aclose()
        for delivery in unfinished.values():
            await self._hand_back(delivery, SHUTDOWN, "worker shutting down")

    async def _hand_back(self, delivery: Delivery, kind: str, reason: str) -> None:
        """Give an unfinished run back to the queue (`queued` again, with a `run.requeued`
        event saying why); if Redis is away the entry stays pending and is reclaimed."""
        try:
            run = await self.store.get(delivery.run_id)
            if run is None or run.status.terminal:
                await self.queue.ack(delivery)
                return
            run.status = RunStatus.QUEUED
            await self.store.transition(run, EventType.RUN_REQUEUED, {"reason": reason})
            await self.queue.requeue(delivery)
        except Exception:
            log.warning("hand_back_failed", run_id=delivery.run_id, exc_info=True)
            return
        RUNS_REQUEUED.labels(kind).inc()
        log.info("run_handed_back", run_id=delivery.run_id, reason=reason)

    async def run(self) -> None:
        """Consume until cancelled; then cancel in-flight runs without acknowledging them."""
        delay = 0.1
        while True:  # Redis may still be starting: wait for it rather than die unseen
            try:
                await self.queue.ensure_group()
                break
            except RedisError:
                log.warning("queue_unavailable", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        min_idle = self.settings.claim_min_idle_s
        loops = [
            self._every(min(5.0, min_idle / 2), self._reclaim),
            self._every(min_idle / 3, self._heartbeat),
            self._every(self.settings.trim_interval_s, self._housekeeping),
            self._every(QUEUE_METRICS_INTERVAL_S, self._queue_metrics),
            self._every(CANCEL_POLL_S, self._cancel_cancelled),
            self._consume(),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away for a moment: the next tick tries again
                log.warning("worker_step_failed", step=step.__name__, exc_info=True)

    async def _consume(self) -> None:
        while self._intake_open:
            if self.free_slots <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if not self.gate.opened.is_set():  # no agent answers: leave the runs queued
                self._slot_freed.clear()  # set by a drain too, which must not wait for agents
                await _either(self.gate.opened, self._slot_freed)
                continue
            try:
                deliveries = await self.queue.read(self.free_slots, READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("queue_read_failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for delivery in deliveries:
                self._start(delivery)
        self._intake_closed.set()
        await asyncio.Event().wait()  # intake closed: idle until cancelled

    async def _reclaim(self) -> None:
        if self._intake_open and self.gate.opened.is_set() and self.free_slots > 0:
            for delivery in await self.queue.reclaim(
                self.settings.claim_min_idle_s, self.free_slots
            ):
                self._start(delivery)  # logged as run_reclaimed in its trace (_traced)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(list(self.held.values()))

    async def _housekeeping(self) -> None:
        await self.queue.trim()

    async def _queue_metrics(self) -> None:
        lag, pending = await self.queue.depth()
        QUEUE_LAG.set(lag)
        QUEUE_PENDING.set(pending)
        undelivered_age, pending_age = await self.queue.oldest_ages()
        QUEUE_OLDEST_AGE.labels("undelivered").set(undelivered_age)
        QUEUE_OLDEST_AGE.labels("pending").set(pending_age)

    async def _cancel_cancelled(self) -> None:
        await self.watch.poll()

    def _start(self, delivery: Delivery) -> None:
        if not self._intake_open:  # read while shutting down: handed back with the rest
            self._unstarted.append(delivery)
            return
        if delivery.key in self.held:
            return
        self.held[delivery.key] = delivery
        task = asyncio.create_task(self._traced(delivery), name=f"run-{delivery.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _traced(self, delivery: Delivery) -> None:
        """`_handle` in the run's trace: the span continues the context the api stored with
        the queue entry, so api, worker and agents share one trace id."""
        bind_run(delivery.run_id)
        with invoke_agent_span(
            ORCHESTRATOR_AGENT,
            remote=False,
            run_id=delivery.run_id,
            context=extract_context(delivery.trace_context),
            attributes={"podcrew.run.attempt": delivery.deliveries},
        ):
            if delivery.deliveries > 1:
                log.info("run_reclaimed", deliveries=delivery.deliveries)
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        RUNS_IN_FLIGHT.inc()
        bind_run(delivery.run_id)
        try:
            # Read just before the intake paused: it waits here, still held and heartbeaten.
            await self.gate.opened.wait()
            if await self.handler.execute(delivery):
                await self.queue.ack(delivery)
        except asyncio.CancelledError:
            raise
        except AgentsUnreachable as exc:
            self.gate.close(str(exc))  # first, so the intake does not read the run again
            await self._hand_back(delivery, AGENT_UNREACHABLE, str(exc))
        except ReplicationTimeout as exc:
            # Final on the primary, not yet on its replicas: a failover now could lose the
            # end. Left pending, it is reclaimed later and acknowledged if it is still final.
            log.warning("run_end_not_replicated", error=str(exc))
        except Exception:
            # Redis failed while storing the outcome: leave the entry pending, so it is
            # reclaimed and the (idempotent) final transition is tried again.
            log.exception("run_handling_failed")
        finally:
            RUNS_IN_FLIGHT.dec()
            self.held.pop(delivery.key, None)
            self._slot_freed.set()
