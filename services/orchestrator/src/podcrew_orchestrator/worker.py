"""Worker mode: consume the run queue and execute each run's pipeline.

A run is acknowledged only after its final state is stored. If this process dies, the runs
it held stop being heartbeaten and a live worker reclaims them after `claim_min_idle_s`;
a run that keeps killing its workers is dead-lettered after `max_deliveries` and failed
with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge

from podcrew_core.budget import BudgetLimits, BudgetScope, Ledger, budget_scope
from podcrew_core.deadline import Deadline, deadline_scope
from podcrew_core.errors import PodcrewError
from podcrew_core.llm import LLMSettings
from podcrew_core.logging import bind_run
from podcrew_core.metrics import RUN_DURATION, RUNS_FINISHED
from podcrew_core.resilience import RetryBudget, retry_budget_scope
from podcrew_core.schemas import EventType, Run, RunError, RunResult, RunStatus
from podcrew_orchestrator.pipeline import Outcome, Pipeline, RunSpec
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import run_digest

RUNS_IN_FLIGHT = Gauge("podcrew_worker_runs_in_flight", "Runs this worker is executing now.")
QUEUE_LAG = Gauge("podcrew_queue_lag_entries", "Run-queue entries not yet delivered to any worker.")
QUEUE_PENDING = Gauge(
    "podcrew_queue_pending_entries", "Run-queue entries delivered but not yet acknowledged."
)

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
    ) -> None:
        self.settings = settings
        self.llm = llm
        self.ledger = ledger
        self.store = store
        self.queue = queue
        self.pipeline = pipeline
        self.held: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    @property
    def free_slots(self) -> int:
        return self.settings.worker_concurrency - len(self.held)

    async def run(self) -> None:
        """Consume until cancelled; then cancel in-flight runs without acknowledging them."""
        await self.queue.ensure_group()
        min_idle = self.settings.claim_min_idle_s
        loops = [
            self._every(min(5.0, min_idle / 2), self._reclaim),
            self._every(min_idle / 3, self._heartbeat),
            self._every(self.settings.trim_interval_s, self._housekeeping),
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
        while True:
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

    async def _reclaim(self) -> None:
        if self.free_slots > 0:
            for delivery in await self.queue.reclaim(
                self.settings.claim_min_idle_s, self.free_slots
            ):
                log.info("run_reclaimed", run_id=delivery.run_id, deliveries=delivery.deliveries)
                self._start(delivery)

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(list(self.held))

    async def _housekeeping(self) -> None:
        await self.queue.trim()
        lag, pending = await self.queue.depth()
        QUEUE_LAG.set(lag)
        QUEUE_PENDING.set(pending)

    def _start(self, delivery: Delivery) -> None:
        if delivery.entry_id in self.held:
            return
        self.held[delivery.entry_id] = delivery
        task = asyncio.create_task(self._handle(delivery), name=f"run-{delivery.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        watcher = asyncio.create_task(self._watch_cancel(run.id, work, cancelled_by_client))
        try:
            await work
        except asyncio.CancelledError:
            if not cancelled_by_client.is_set():
                raise
            log.info("run_cancelled")
            return True
        except TimeoutError:
            deadline_s = run.budget.deadline_s or self.settings.run_deadline_s
            error = RunError(
                type="deadline-exceeded", detail=f"the run did not finish within {deadline_s:.0f}s"
            )
            outcome.result = outcome.result or outcome.partial(error.detail)
            await self._finish(run, RunStatus.FAILED, outcome, error)
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
            watcher.cancel()
        return True

    async def _pipeline(self, run: Run, outcome: Outcome) -> None:
        deadline_s = run.budget.deadline_s or self.settings.run_deadline_s
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
        spec = RunSpec(
            run_id=run.id,
            question=run.question,
            max_subquestions=run.max_subquestions,
            models=self.llm.models(run.tier),
            deadline=Deadline.after(deadline_s),
            budget=RetryBudget(self.llm.retry_budget),
            history=history,
            limits=limits,
        )

        async def emit(event: EventType, data: dict[str, Any]) -> object:
            return await self.store.publish(run.id, event, data)

        budget = BudgetScope(self.ledger, limits)
        with (
            deadline_scope(spec.deadline),
            retry_budget_scope(spec.budget),
            budget_scope(budget),
        ):
            async with asyncio.timeout(deadline_s):
                await self.pipeline.run(spec, emit, outcome)

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

    async def _watch_cancel(
        self, run_id: str, work: asyncio.Task[None], flag: asyncio.Event
    ) -> None:
        while not work.done():
            await asyncio.sleep(CANCEL_POLL_S)
            with contextlib.suppress(Exception):
                if await self.store.status(run_id) == RunStatus.CANCELLED:
                    flag.set()
                    work.cancel()
                    return

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
