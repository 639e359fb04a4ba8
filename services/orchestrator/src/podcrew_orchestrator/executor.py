"""Executing one run: the run's state machine, from the queue entry to its stored final state.

A run delivered too often is dead-lettered and failed; otherwise it is started (`running`,
`run.started` with its attempt), its pipeline runs within the run's deadline and budgets,
and it ends `succeeded` or `failed` (with whatever partial result it reached), or
`cancelled` when a client cancelled it; a run that stopped because no agent could be reached
is given back to the queue instead (`AgentsUnreachable`) while its deadline, counted from
its first start, has time left. The final state is stored by one transition that
refuses to overwrite a final state; only a transition that took effect is followed by the
after-finish parts (`Aftermath`). The queue consumer acknowledges the entry when `execute`
says so, which is never before the final state is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.exceptions import RedisError

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import EventType, Run, RunError, RunStatus
from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.resilience import unreachable
from podcrew_core.runtime.scope import open_hop
from podcrew_core.runtime.tracing import record_prompt_version
from podcrew_orchestrator.aftermath import Aftermath, Ending
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.consumer import AgentsUnreachable
from podcrew_orchestrator.pipeline import Outcome, Pipeline, RunSpec
from podcrew_orchestrator.queue import Delivery, RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore

log = structlog.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _time_left(run: Run) -> bool:
    """Whether the run's deadline, counted from its first start, has not passed: a run
    handed back while an agent is away waits at most that long in all."""
    started = run.started_at or _now()
    return _now() < started + timedelta(seconds=run.budget.deadline_s)


class RunExecutor:
    """Executes one delivered run and stores its final state."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        store: RunStore,
        queue: RunQueue,
        pipeline: Pipeline,
        llm: LLMSettings,
        ledger: Ledger,
        aftermath: Aftermath,
        watch: CancelWatch,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.pipeline = pipeline
        self.llm = llm
        self.ledger = ledger
        self.aftermath = aftermath
        self.watch = watch

    async def execute(self, delivery: Delivery) -> bool:
        """Run one delivery; True when the entry may be acknowledged."""
        run = await self.store.get(delivery.run_id)
        if run is None:
            return True
        if run.status.terminal:  # ended by a client's cancel, or by a run before a crash
            await self.store.replicated(run.id)  # its end may not have reached them yet
            await self.store.release(run)
            return True
        if delivery.deliveries > self.settings.max_deliveries:
            await self._dead_letter(run, delivery)
            return False
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or _now()
        run.attempts = delivery.deliveries
        if await self.store.transition(
            run, EventType.RUN_STARTED, {"attempt": delivery.deliveries}
        ):
            await self._run(run)
        return True

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for after-finish work still running in the background."""
        await self.aftermath.settle(timeout_s)

    async def _dead_letter(self, run: Run, delivery: Delivery) -> None:
        reason = (
            f"the run was delivered {delivery.deliveries} times without finishing "
            f"(limit {self.settings.max_deliveries}); moved to the dead-letter stream"
        )
        await self._finish(
            run, RunStatus.FAILED, Outcome(), RunError(type="dead-lettered", detail=reason)
        )
        await self.queue.dead_letter(delivery, reason)
        log.error("run_dead_lettered", deliveries=delivery.deliveries)

    async def _run(self, run: Run) -> None:
        """Run the pipeline of a started run, as a task a client's cancellation can stop,
        and store how it ended."""
        outcome = Outcome()
        work = asyncio.create_task(self._pipeline(run, outcome))
        with self.watch.watching(run.id, work) as cancelled_by_client:
            try:
                await work
            except asyncio.CancelledError:
                if not cancelled_by_client.is_set():
                    raise
                log.info("run_cancelled")
                await self._cancelled(run, outcome)
            except RedisError:
                # The state store blinked: the run did nothing wrong. Leave the entry pending;
                # it is reclaimed and run again once Redis is back.
                raise
            except PodcrewError as exc:
                if unreachable(exc) and _time_left(run):
                    raise AgentsUnreachable(exc.detail) from exc
                await self._fail(run, outcome, RunError(type=exc.slug, detail=exc.detail))
            except Exception as exc:
                log.exception("run_crashed")
                detail = f"{exc.__class__.__name__}: {exc}"[:500]
                error = RunError(type="internal-error", detail=detail)
                await self._finish(run, RunStatus.FAILED, outcome, error)
            else:
                await self._finish(run, RunStatus.SUCCEEDED, outcome, None)

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
            max_tokens=run.budget.max_tokens,
            max_cost_usd=run.budget.max_cost_usd,
            tenant_daily_tokens=tenant.daily_tokens,
            tenant_daily_cost_usd=tenant.daily_cost_usd,
            global_daily_cost_usd=self.settings.daily_spend_cap_usd,
        )
        hop = Hop(
            run.id,
            Deadline.after(run.budget.deadline_s),
            RetryBudget(self.llm.retry_budget),
            limits,
            run.priority,
        )
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

    async def _cancelled(self, run: Run, outcome: Outcome) -> None:
        """A client cancelled the run: `DELETE` stored its final state already, so only the
        after-finish parts are left, with what the run spent until then."""
        run.status, run.finished_at = RunStatus.CANCELLED, _now()
        run.usage, run.cost_usd = outcome.usage, outcome.usage.cost_usd
        run.prompt_version = outcome.prompt_version
        await self.aftermath(Ending(run, outcome.tool_calls))

    async def _fail(self, run: Run, outcome: Outcome, error: RunError) -> None:
        """Fail the run, keeping a report of the findings gathered so far if it had none."""
        outcome.result = outcome.result or outcome.partial(error.detail)
        await self._finish(run, RunStatus.FAILED, outcome, error)

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
        run.prompt_version = outcome.prompt_version
        record_prompt_version(run.prompt_version)
        event = EventType.RUN_SUCCEEDED if status is RunStatus.SUCCEEDED else EventType.RUN_FAILED
        data: dict[str, Any] = {"usage": run.usage.model_dump(), "cost_usd": run.cost_usd}
        if error:
            data["error"] = error.model_dump()
        if await self.store.transition(run, event, data):
            await self.aftermath(Ending(run, outcome.tool_calls))
