"""What happens to an AgentRun, free of kopf: submit, follow, store the report, cancel, expire.

The handlers call these with the object and its collaborators and turn the errors raised
here (`podcrew_operator.errors`) into kopf's verdicts. Every status change goes through
`RunDriver.patch`, so conditions always carry proper transition times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from podcrew_core.contracts.schemas import Run, RunCreate

from . import report as reports
from .clients.kubernetes import KubernetesClient, ObjectRef
from .clients.orchestrator import OrchestratorClient
from .errors import (
    ConfigMapNotOwned,
    InvalidSpec,
    KubernetesRejected,
    OrchestratorRejected,
    OrchestratorUnauthorized,
    Retryable,
    RunLost,
)
from .resource import (
    AgentRunSpec,
    idempotency_key,
    parse_spec,
    report_config_map_name,
)
from .retry import next_poll_s
from .settings import OperatorSettings
from .slots import Slots
from .status import (
    FINISHED,
    REPORT_STORED,
    SUBMITTED,
    Condition,
    Phase,
    evaluation_field,
    event_for,
    is_finished,
    merge_conditions,
    parse_timestamp,
    progress_condition,
    run_fields,
    timestamp,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class StopSignal(Protocol):
    """Tells a long-running step that it must end (the object was deleted, or the operator
    is stopping)."""

    def is_set(self) -> bool: ...

    def deleted(self) -> bool:
        """The object itself is being deleted (not merely the operator stopping)."""
        ...

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds` or until stopped; True if stopped."""
        ...


class Announce(Protocol):
    """Records a Kubernetes Event on the AgentRun."""

    def __call__(self, type: str, reason: str, message: str) -> None: ...


@dataclass
class Runtime:
    """What the handlers share, built at operator start-up and closed at shutdown."""

    settings: OperatorSettings
    orchestrator: OrchestratorClient
    kube: KubernetesClient
    slots: Slots
    clock: Callable[[], datetime] = field(default=utcnow)


@dataclass(frozen=True)
class Target:
    """The AgentRun being worked on."""

    namespace: str
    name: str
    uid: str
    generation: int | None = None

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.namespace, self.name)

    def as_owner(self) -> dict[str, Any]:
        return {"metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}


class RunDriver:
    def __init__(
        self,
        runtime: Runtime,
        target: Target,
        status: Mapping[str, Any],
        announce: Announce,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.rt = runtime
        self.target = target
        self.announce = announce
        self.logger = logger
        self.conditions: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
        self.phase = status.get("phase")

    async def patch(self, fields: Mapping[str, Any], *conditions: Condition) -> None:
        patch = dict(fields)
        if conditions:
            self.conditions = merge_conditions(
                self.conditions, conditions, generation=self.target.generation, now=self.rt.clock()
            )
            patch["conditions"] = self.conditions
        await self.rt.kube.patch_status(self.target.ref, patch)
        self.phase = patch.get("phase", self.phase)

    # --- the run's life -------------------------------------------------------------------

    async def drive(
        self,
        spec: Mapping[str, Any],
        run_id: str | None,
        in_flight: Callable[[], Collection[str]],
        stop: StopSignal,
    ) -> None:
        """Submit the run unless it has been, follow it to its end, store its report.

        Returns early (leaving the status as it is) when `stop` is set; raises `Retryable`
        for kopf to call it again later, and `InvalidSpec`/`OrchestratorRejected`/`RunLost`
        after recording the failure in the status.
        """
        parsed, request = await self._parse(spec)
        if run_id is None:
            if not await self._wait_for_slot(in_flight, stop):
                return
            run_id = await self._submit(request)
            if stop.is_set():
                if stop.deleted():
                    # Deleted while the submission was in flight: the delete handler may
                    # have found no run id to cancel, so cancel it here.
                    await self.rt.orchestrator.cancel(run_id)
                return
        else:
            self.rt.slots.hold(self.target.uid)  # in flight already, whatever the count
        run = await self._follow(run_id, stop)
        if run is not None:
            await self._finish(run, parsed)
        self.rt.slots.release(self.target.uid)

    async def _parse(self, spec: Mapping[str, Any]) -> tuple[AgentRunSpec, RunCreate]:
        try:
            return parse_spec(spec)
        except InvalidSpec as exc:
            await self._fail(str(exc), "InvalidSpec", submitted=False)
            raise

    async def _fail(self, message: str, reason: str, *, submitted: bool) -> None:
        conditions = [Condition(FINISHED, True, reason, message)]
        if not submitted:
            conditions.append(Condition(SUBMITTED, False, reason, message))
        await self.patch(
            {"phase": Phase.FAILED.value, "finishedAt": timestamp(self.rt.clock())}, *conditions
        )
        self.rt.slots.release(self.target.uid)
        self.announce("Warning", reason, message)

    async def _wait_for_slot(
        self, in_flight: Callable[[], Collection[str]], stop: StopSignal
    ) -> bool:
        slots, told = self.rt.slots, False
        while not slots.try_take(self.target.uid, in_flight()):
            if not told:
                message = (
                    f"{slots.capacity} AgentRuns are in flight (max_concurrent_runs); "
                    "submitting when one finishes"
                )
                await self.patch(
                    {"phase": Phase.PENDING.value},
                    Condition(SUBMITTED, False, "WaitingForSlot", message),
                )
                told = True
            if await stop.sleep(self.rt.settings.poll_interval_s):
                return False
        return True

    async def _submit(self, request: RunCreate) -> str:
        key = idempotency_key(self.target.uid)
        try:
            submitted = await self.rt.orchestrator.submit(request, key)
        except OrchestratorUnauthorized as exc:
            await self._note_unsubmitted("Unauthorized", str(exc))
            raise
        except Retryable as exc:
            await self._note_unsubmitted("OrchestratorUnavailable", str(exc))
            raise
        except OrchestratorRejected as exc:
            await self._fail(str(exc), "Rejected", submitted=False)
            raise
        self.logger.info("run submitted: %s (idempotency key %s)", submitted.run_id, key)
        # The id is recorded before anything else can happen: it is what cancels the run
        # on delete and what a restarted operator follows.
        await self.patch(
            {"phase": Phase.PENDING.value, "runId": submitted.run_id},
            Condition(SUBMITTED, True, "Accepted", f"run {submitted.run_id} accepted"),
        )
        return submitted.run_id

    async def _note_unsubmitted(self, reason: str, message: str) -> None:
        await self.patch(
            {"phase": Phase.PENDING.value}, Condition(SUBMITTED, False, reason, message)
        )

    async def _follow(self, run_id: str, stop: StopSignal) -> Run | None:
        """Poll the run until it ends (the wait grows while nothing changes); None if stopped."""
        settings = self.rt.settings
        wait, seen = settings.poll_interval_s, None
        while True:
            try:
                run = await self.rt.orchestrator.get(run_id)
            except RunLost as exc:
                await self._fail(str(exc), "RunLost", submitted=True)
                raise
            if run.status.terminal:
                return run
            current = (run.status, run.started_at)
            if current != seen:
                await self.patch(run_fields(run), progress_condition(run))
            wait = next_poll_s(
                wait,
                changed=current != seen,
                first_s=settings.poll_interval_s,
                max_s=settings.poll_max_interval_s,
            )
            seen = current
            if await stop.sleep(wait):
                return None

    async def _finish(self, run: Run, spec: AgentRunSpec) -> None:
        fields = run_fields(run)
        stored = await self._store_report(run, spec)
        if stored is not None:
            fields["reportRef"] = reports.report_ref(stored)
            report = Condition(
                REPORT_STORED, True, "Stored", f"`{reports.REPORT_KEY}` in ConfigMap {stored}"
            )
        elif run.result is None:
            report = Condition(REPORT_STORED, False, "NoReport", "the run produced no report")
        else:
            report = Condition(REPORT_STORED, False, "StoreFailed", "see the Warning event")
        await self.patch(fields, progress_condition(run), report)
        self.announce(*event_for(run))
        self.logger.info("run %s ended %s", run.id, run.status.value)

    async def _store_report(self, run: Run, spec: AgentRunSpec) -> str | None:
        if run.result is None:
            return None
        name = report_config_map_name(self.target.name, spec)
        body = reports.config_map(self.target.as_owner(), name, run)
        try:
            await self.rt.kube.apply_config_map(body, self.target.uid)
        except (ConfigMapNotOwned, KubernetesRejected) as exc:
            self.announce("Warning", "ReportNotStored", str(exc))
            return None
        return name


# --- evaluation ---------------------------------------------------------------------------


async def await_evaluation(
    runtime: Runtime, target: Target, status: Mapping[str, Any], stop: StopSignal
) -> bool:
    """Poll a succeeded run until it is evaluated, then mirror the scores into the status;
    False if stopped first or the run expired at the orchestrator unevaluated.

    An evaluation comes when someone runs `podcrew eval`, if ever: the wait grows to
    `poll_max_interval_s` and stays there, and ends with the run's own life (`run_ttl_s`)."""
    settings = runtime.settings
    wait = settings.poll_interval_s
    while True:
        try:
            run = await runtime.orchestrator.get(str(status["runId"]))
        except RunLost:
            return False
        if run.evaluation is not None:
            patch = {"evaluation": evaluation_field(run.evaluation)}
            await runtime.kube.patch_status(target.ref, patch)
            return True
        wait = next_poll_s(
            wait,
            changed=False,
            first_s=settings.poll_interval_s,
            max_s=settings.poll_max_interval_s,
        )
        if await stop.sleep(wait):
            return False


# --- deletion and expiry -------------------------------------------------------------------


async def cancel_on_delete(
    runtime: Runtime,
    status: Mapping[str, Any],
    deletion_timestamp: str | None,
    announce: Announce,
) -> float | None:
    """Cancel the AgentRun's unfinished run. Returns None when done (the finalizer may go),
    or raises `Retryable` while the orchestrator cannot be reached and the wait is not over;
    gives up (returns None, with a Warning event) after `finalizer_timeout_s`."""
    run_id = status.get("runId")
    if not run_id or is_finished(status):
        return None
    try:
        cancelled = await runtime.orchestrator.cancel(str(run_id))
    except Retryable:
        if deletion_remaining_s(runtime, deletion_timestamp) > 0:
            raise
        announce(
            "Warning",
            "CancelAbandoned",
            f"run {run_id} could not be cancelled within "
            f"{runtime.settings.finalizer_timeout_s:g}s; it may still finish at the orchestrator",
        )
        return None
    if cancelled:
        announce("Normal", "RunCancelled", f"run {run_id} cancelled: its AgentRun was deleted")
    return None


def deletion_remaining_s(runtime: Runtime, deletion_timestamp: str | None) -> float:
    """Seconds left of the bounded wait on a deleted AgentRun."""
    since = parse_timestamp(deletion_timestamp) or runtime.clock()
    deadline = since + timedelta(seconds=runtime.settings.finalizer_timeout_s)
    return (deadline - runtime.clock()).total_seconds()


def expiry_remaining_s(
    runtime: Runtime, spec: Mapping[str, Any], status: Mapping[str, Any]
) -> float | None:
    """Seconds until a finished AgentRun is due for deletion; None if it is kept."""
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None or not is_finished(status):
        return None
    finished = parse_timestamp(status.get("finishedAt")) or runtime.clock()
    return (finished + timedelta(seconds=int(ttl)) - runtime.clock()).total_seconds()


async def expire(
    runtime: Runtime,
    target: Target,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    stop: StopSignal,
) -> bool:
    """Delete the finished AgentRun once its TTL has passed; False if stopped first."""
    remaining = expiry_remaining_s(runtime, spec, status)
    if remaining is None:
        return False
    if remaining > 0 and await stop.sleep(remaining):
        return False
    await runtime.kube.delete_agentrun(target.ref, target.uid)
    return True
