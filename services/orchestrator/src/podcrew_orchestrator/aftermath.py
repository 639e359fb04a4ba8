"""What happens after a run ends: each part small, on its own, and called in one place.

The run executor stores a run's final state and hands the `Ending` to `Aftermath`, which
calls each part in the order the worker was given them: the result cache and thread memory,
the finished-run metrics, the audit line; parts that would talk to the outside world at
their own pace may run in the background, so a slow one cannot hold up the queue. The
completion webhook is not one of them: the final transition owes it to the webhook outbox
(`podcrew_orchestrator.outbox`), which delivers it once whatever stops in between.
A new part is one more entry in the lists `podcrew_orchestrator.worker` builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from podcrew_core.contracts.schemas import Run, RunStatus
from podcrew_core.runtime.logging import log_run_audit
from podcrew_core.runtime.metrics import (
    PROMPT_VERSION_LABEL,
    RUN_COST,
    RUN_DURATION,
    RUN_TOKENS,
    RUNS_BY_PROMPT_VERSION,
    RUNS_FINISHED,
)
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import run_digest

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Ending:
    """A run that has just reached its final state: the run as stored, and the tool calls
    its research made, by tool name (for the audit line)."""

    run: Run
    tool_calls: Mapping[str, int] = field(default_factory=dict)


AfterFinish = Callable[[Ending], Coroutine[Any, Any, None]]


class Aftermath:
    """Calls every after-finish part for each ending: `parts` in order, awaited;
    `background` parts as tasks of their own, which `settle` waits for on shutdown."""

    def __init__(
        self, parts: Sequence[AfterFinish], background: Sequence[AfterFinish] = ()
    ) -> None:
        self.parts = tuple(parts)
        self.background = tuple(background)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, ending: Ending) -> None:
        for part in self.parts:
            await part(ending)
        for part in self.background:
            task = asyncio.create_task(part(ending), name=f"after-{ending.run.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the background parts still running."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)


class RunMemory:
    """Feeds a succeeded run's report to its thread (the planner of the thread's next run
    sees it) or, for a run outside a thread, to the result cache."""

    def __init__(self, store: RunStore, settings: OrchestratorSettings) -> None:
        self.store = store
        self.settings = settings

    async def __call__(self, ending: Ending) -> None:
        run, s = ending.run, self.settings
        result = run.result
        if run.status is not RunStatus.SUCCEEDED or result is None:
            return
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


class FinishedRunMetrics:
    """Counts a run the worker finished (outcome, duration, cost and tokens by tier and
    tenant class) and logs `run_finished`. A run a client cancelled was finished by the
    api's `DELETE`, not here: it is not counted, as it never was."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings

    async def __call__(self, ending: Ending) -> None:
        run = ending.run
        if run.status is RunStatus.CANCELLED:
            return
        status = run.status.value
        RUNS_FINISHED.labels(status).inc()
        version = PROMPT_VERSION_LABEL(run.prompt_version)
        RUNS_BY_PROMPT_VERSION.labels(version, run.tier, status).inc()
        if run.finished_at is not None:
            RUN_DURATION.labels(status).observe((run.finished_at - run.created_at).total_seconds())
        log.info(
            "run_finished",
            status=status,
            error=run.error.type if run.error else None,
            tokens=run.usage.total_tokens,
        )
        tenant_class = self.settings.limits_for(run.tenant).tenant_class
        RUN_COST.labels(run.tier, tenant_class).inc(run.cost_usd)
        RUN_TOKENS.labels(run.tier, tenant_class).inc(run.usage.total_tokens)


async def audit(ending: Ending) -> None:
    """The run's one audit line (`run_audit`)."""
    log_run_audit(ending.run, ending.tool_calls)
