"""Worker mode: consume the run queue and execute each run's pipeline.

A run is acknowledged only after its final state is stored. If this process dies, the runs
it held stop being heartbeaten and a live worker reclaims them after `claim_min_idle_s`;
a run that keeps killing its workers is dead-lettered after `max_deliveries` and failed
with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge
from redis.exceptions import RedisError

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import EventType, Run, RunError, RunResult, RunStatus
from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.logging import bind_run, log_run_audit
from podcrew_core.runtime.metrics import RUN_COST, RUN_DURATION, RUN_TOKENS, RUNS_FINISHED
from podcrew_core.runtime.scope import open_hop
from podcrew_core.runtime.tracing import extract_context, invoke_agent_span
from podcrew_orchestrator.pipeline import Outcome, Pipeline, RunSpec
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import run_digest
from podcrew_orchestrator.webhooks import WebhookSender

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
# Depth and age are autoscaling and alerting signals: refreshed far more often than trimming.
QUEUE_METRICS_INTERVAL_S = 5.0
ORCHESTRATOR_AGENT = "orchestrator"

# How often one read of every held run's status looks for runs a client cancelled.
CANCEL_POLL_S = 0.5
READ_BLOCK_MS = 1000

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class Worker:
    def __init__(
        self,
        settings: OrchestratorSettings,
        store: RunStore,
        queue: RunQueue,
        pipeline: Pipeline,
        llm: LLMSettings,
        ledger: Ledger,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.webhooks = webhooks
        self._deliveries: set[asyncio.Task[None]] = set()
        self.settings = settings
        self.llm = llm
        self.ledger = ledger
        self.store = store
        self.queue = queue
        self.pipeline = pipeline
        self.held: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The pipeline task of every run executing here, with the run id and the flag that
        # tells `_execute` a client cancelled it: what `_cancel_cancelled` watches.
        self._cancellable: dict[asyncio.Task[None], tuple[str, asyncio.Event]] = {}
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
        unfinished = {**dict(self.held), **{d.entry_id: d for d in self._unstarted}}
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._deliveries:  # let webhooks in flight finish within what is left of the grace
            await asyncio.wait(self._deliveries, timeout=max(1.0, grace_s))
        for delivery in unfinished.values():
            try:
                await self._hand_back(delivery)
            except Exception:  # Redis away: the entry stays pending and will be reclaimed
                log.warning("hand_back_failed", run_id=delivery.run_id, exc_info=True)

    async def _hand_back(self, delivery: Delivery) -> None:
        run = await self.store.get(delivery.run_id)
        if run is None or run.status.terminal:
            await self.queue.ack(delivery.entry_id)
            return
        run.status = RunStatus.QUEUED
        await self.store.transition(run, EventType.RUN_REQUEUED, {"reason": "worker shutting down"})
        await self.queue.requeue(delivery)
        log.info("run_handed_back", run_id=delivery.run_id)

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
        if self._intake_open and self.free_slots > 0:
            for delivery in await self.queue.reclaim(
                self.settings.claim_min_idle_s, self.free_slots
            ):
                self._start(delivery)  # logged as run_reclaimed in its trace (_traced)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(list(self.held))

    async def _housekeeping(self) -> None:
        await self.queue.trim()

    async def _queue_metrics(self) -> None:
        lag, pending = await self.queue.depth()
        QUEUE_LAG.set(lag)
        QUEUE_PENDING.set(pending)
        undelivered_age, pending_age = await self.queue.oldest_ages()
        QUEUE_OLDEST_AGE.labels("undelivered").set(undelivered_age)
        QUEUE_OLDEST_AGE.labels("pending").set(pending_age)

    def _start(self, delivery: Delivery) -> None:
        if not self._intake_open:  # read while shutting down: handed back with the rest
            self._unstarted.append(delivery)
            return
        if delivery.entry_id in self.held:
            return
        self.held[delivery.entry_id] = delivery
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
            if await self._execute(delivery):
                await self.queue.ack(delivery.entry_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis failed while storing the outcome: leave the entry pending, so it is
            # reclaimed and the (idempotent) final transition is tried again.
            log.exception("run_handling_failed")
        finally:
            RUNS_IN_FLIGHT.dec()
            self.held.pop(delivery.entry_id, None)
            self._slot_freed.set()

    async def _execute(self, delivery: Delivery) -> bool:
        """Run one delivery; True when the entry may be acknowledged."""
        run = await self.store.get(delivery.run_id)
        if run is None or run.status.terminal:
            return True
        if delivery.deliveries > self.settings.max_deliveries:
            reason = (
                f"the run was delivered {delivery.deliveries} times without finishing "
                f"(limit {self.settings.max_deliveries}); moved to the dead-letter stream"
            )
            await self._finish(
                run, RunStatus.FAILED, Outcome(), RunError(type="dead-lettered", detail=reason)
            )
            await self.queue.dead_letter(delivery, reason)
            log.error("run_dead_lettered", deliveries=delivery.deliveries)
            return False
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or _now()
        run.attempts = delivery.deliveries
        if not await self.store.transition(
            run, EventType.RUN_STARTED, {"attempt": delivery.deliveries}
        ):
            return True

        outcome = Outcome()
        cancelled_by_client = asyncio.Event()
        work = asyncio.create_task(self._pipeline(run, outcome))
        self._cancellable[work] = (run.id, cancelled_by_client)
        try:
            await work
        except asyncio.CancelledError:
            if not cancelled_by_client.is_set():
                raise
            log.info("run_cancelled")
            self._notify(run.model_copy(update={"status": RunStatus.CANCELLED}))
            run.status, run.finished_at = RunStatus.CANCELLED, _now()
            run.usage, run.cost_usd = outcome.usage, outcome.usage.cost_usd
            log_run_audit(run, outcome.tool_calls)
            return True
        except TimeoutError:
            deadline_s = run.budget.deadline_s or self.settings.run_deadline_s
            error = RunError(
                type="deadline-exceeded", detail=f"the run did not finish within {deadline_s:.0f}s"
            )
            outcome.result = outcome.result or outcome.partial(error.detail)
            await self._finish(run, RunStatus.FAILED, outcome, error)
        except RedisError:
            # The state store blinked: the run did nothing wrong. Leave the entry pending;
            # it is reclaimed and run again once Redis is back.
            raise
        except PodcrewError as exc:
            outcome.result = outcome.result or outcome.partial(exc.detail)
            await self._finish(
                run, RunStatus.FAILED, outcome, RunError(type=exc.slug, detail=exc.detail)
            )
        except Exception as exc:
            log.exception("run_crashed")
            error = RunError(type="internal-error", detail=f"{exc.__class__.__name__}: {exc}"[:500])
            await self._finish(run, RunStatus.FAILED, outcome, error)
        else:
            await self._finish(run, RunStatus.SUCCEEDED, outcome, None)
        finally:
            self._cancellable.pop(work, None)
        return True

    async def _pipeline(self, run: Run, outcome: Outcome) -> None:
        history = (
            await self.store.thread_history(
                run.tenant, run.thread_id, self.settings.thread_max_turns
            )
            if run.thread_id
            else []
        )
        tenant = self.settings.limits_for(run.tenant)
        limits = BudgetLimits(
            run_id=run.id,
            tenant=run.tenant,
            max_tokens=run.budget.max_tokens or self.settings.max_run_tokens,
            max_cost_usd=run.budget.max_cost_usd or self.settings.max_run_cost_usd,
            tenant_daily_tokens=tenant.daily_tokens,
            tenant_daily_cost_usd=tenant.daily_cost_usd,
            global_daily_cost_usd=self.settings.daily_spend_cap_usd,
        )
        deadline = Deadline.after(run.budget.deadline_s or self.settings.run_deadline_s)
        hop = Hop(run.id, deadline, RetryBudget(self.llm.retry_budget), limits)
        spec = RunSpec(
            question=run.question,
            max_subquestions=run.max_subquestions,
            models=self.llm.models(run.tier),
            hop=hop,
            history=history,
        )

        async def emit(events: Sequence[tuple[EventType, dict[str, Any]]]) -> object:
            return await self.store.publish_many(run.id, events)

        async with open_hop(hop, self.ledger, what="the run"):
            await self.pipeline.run(spec, emit, outcome)

    def _notify(self, run: Run) -> None:
        """POST the final run to its callback URL, in the background: a slow receiver must
        not hold up the queue. Retries happen inside `deliver`."""
        if run.callback_url is None or self.webhooks is None:
            return
        task = asyncio.create_task(self._deliver(run), name=f"webhook-{run.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, run: Run) -> None:
        assert self.webhooks is not None
        assert run.callback_url is not None
        result = await self.webhooks.deliver(run.callback_url, run.model_dump_json().encode())
        log.info(
            "webhook_delivered" if result.delivered else "webhook_failed",
            outcome=result.outcome,
            attempts=result.attempts,
            status=result.status,
            error=result.error,
        )

    async def _remember(self, run: Run, result: RunResult) -> None:
        """Feed the result cache and the run's thread."""
        s = self.settings
        if run.thread_id:
            await self.store.append_thread(
                run.tenant,
                run.thread_id,
                run.question,
                result.report,
                s.thread_max_turns,
                s.thread_ttl_s,
            )
        elif s.result_cache_ttl_s and not result.unresearched:
            await self.store.cache_result(run_digest(run), result, s.result_cache_ttl_s)

    async def _cancel_cancelled(self) -> None:
        """Stop the pipeline of every run here that a client cancelled (`DELETE` sets the
        status). One pipelined read of all their statuses per tick: a poll per run cost
        each run a status read twice a second, for as long as it ran."""
        if not self._cancellable:
            return
        watched = list(self._cancellable.items())
        try:
            statuses = await self.store.statuses([run_id for _, (run_id, _) in watched])
        except RedisError:  # Redis away for a moment: the next tick looks again
            log.debug("cancel_poll_failed", exc_info=True)
            return
        for (work, (_, cancelled_by_client)), status in zip(watched, statuses, strict=True):
            if status is RunStatus.CANCELLED and not work.done():
                cancelled_by_client.set()
                work.cancel()

    async def _finish(
        self, run: Run, status: RunStatus, outcome: Outcome, error: RunError | None
    ) -> None:
        run.status = status
        run.finished_at = _now()
        run.sub_questions = outcome.sub_questions or run.sub_questions
        run.result = outcome.result
        run.usage = outcome.usage
        run.cost_usd = outcome.usage.cost_usd
        run.error = error
        event = EventType.RUN_SUCCEEDED if status is RunStatus.SUCCEEDED else EventType.RUN_FAILED
        data: dict[str, Any] = {"usage": run.usage.model_dump(), "cost_usd": run.cost_usd}
        if error:
            data["error"] = error.model_dump()
        if await self.store.transition(run, event, data):
            if run.result is not None and status is RunStatus.SUCCEEDED:
                await self._remember(run, run.result)
            self._notify(run)
            RUNS_FINISHED.labels(status.value).inc()
            RUN_DURATION.labels(status.value).observe(
                (run.finished_at - run.created_at).total_seconds()
            )
            log.info(
                "run_finished",
                status=status.value,
                error=error.type if error else None,
                tokens=run.usage.total_tokens,
            )
            tenant_class = self.settings.limits_for(run.tenant).tenant_class
            RUN_COST.labels(run.tier, tenant_class).inc(run.cost_usd)
            RUN_TOKENS.labels(run.tier, tenant_class).inc(run.usage.total_tokens)
            log_run_audit(run, outcome.tool_calls)
