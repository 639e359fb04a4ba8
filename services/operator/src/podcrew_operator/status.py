"""What an AgentRun's `.status` says, as pure functions of what the operator observed.

Conditions follow `metav1.Condition`: a condition's `lastTransitionTime` moves only when its
`status` changes, so `kubectl wait --for=condition=Finished` and dashboards see real edges.

- `Submitted`: True (`Accepted`) once the orchestrator has the run; False while it has not:
  `WaitingForSlot`, `OrchestratorUnavailable`, `Unauthorized`, `InvalidSpec`, `Rejected`.
- `Finished`: True with the final phase as reason (`Succeeded`, `Failed`, `Cancelled`) or why
  it failed here (`InvalidSpec`, `Rejected`, `RunLost`); False as `Pending` or `Running`.
- `ReportStored`: True (`Stored`) when `reportRef` names the report's ConfigMap; False as
  `NoReport` or `StoreFailed` (with a Warning event saying why).

`evaluation` mirrors the run's evaluation (`PUT /v1/runs/{id}/evaluation`) once it has one:
its scores by name, who evaluated it and when.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from podcrew_core.contracts.schemas import Evaluation, Run, RunStatus

SUBMITTED = "Submitted"
FINISHED = "Finished"
REPORT_STORED = "ReportStored"
MAX_MESSAGE_CHARS = 1024


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})

PHASE_OF_RUN = {
    RunStatus.QUEUED: Phase.PENDING,
    RunStatus.RUNNING: Phase.RUNNING,
    RunStatus.SUCCEEDED: Phase.SUCCEEDED,
    RunStatus.FAILED: Phase.FAILED,
    RunStatus.CANCELLED: Phase.CANCELLED,
}


def phase_of(status: Mapping[str, Any]) -> Phase | None:
    raw = status.get("phase")
    try:
        return Phase(raw) if raw else None
    except ValueError:
        return None


def is_finished(status: Mapping[str, Any]) -> bool:
    phase = phase_of(status)
    return phase is not None and phase.finished


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as Kubernetes writes times (seconds precision)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def merge_conditions(
    existing: Sequence[Mapping[str, Any]],
    updates: Iterable[Condition],
    *,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """`existing` with `updates` applied; untouched conditions are kept as they were."""
    merged: dict[str, dict[str, Any]] = {str(c["type"]): dict(c) for c in existing if "type" in c}
    for update in updates:
        status = "True" if update.status else "False"
        previous = merged.get(update.type)
        changed = previous is None or previous.get("status") != status
        condition: dict[str, Any] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message[:MAX_MESSAGE_CHARS],
            "lastTransitionTime": (
                timestamp(now)
                if changed or previous is None
                else previous.get("lastTransitionTime", timestamp(now))
            ),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        merged[update.type] = condition
    return list(merged.values())


def run_fields(run: Run) -> dict[str, Any]:
    """The status fields that mirror the run: phase, id, times, usage."""
    fields: dict[str, Any] = {
        "phase": PHASE_OF_RUN[run.status].value,
        "runId": run.id,
        "usage": {"tokens": run.usage.total_tokens, "costUsd": round(run.cost_usd, 6)},
    }
    if run.started_at is not None:
        fields["startedAt"] = timestamp(run.started_at)
    if run.finished_at is not None:
        fields["finishedAt"] = timestamp(run.finished_at)
    if run.evaluation is not None:
        fields["evaluation"] = evaluation_field(run.evaluation)
    return fields


def evaluation_field(evaluation: Evaluation) -> dict[str, Any]:
    """`.status.evaluation`: the scores as the evaluator gave them, who, and when."""
    return {
        "scores": dict(evaluation.scores),
        "evaluator": evaluation.evaluator,
        "evaluatedAt": timestamp(evaluation.evaluated_at),
    }


def awaits_evaluation(status: Mapping[str, Any]) -> bool:
    """A succeeded AgentRun whose run has no evaluation in its status yet."""
    return (
        phase_of(status) is Phase.SUCCEEDED
        and bool(status.get("runId"))
        and not status.get("evaluation")
    )


def progress_condition(run: Run) -> Condition:
    """`Finished`, as the run's status says it."""
    phase = PHASE_OF_RUN[run.status]
    if not phase.finished:
        message = "queued at the orchestrator" if phase is Phase.PENDING else "running"
        return Condition(FINISHED, False, phase.value, message)
    if run.error is not None:
        message = f"{run.error.type}: {run.error.detail}"
    elif phase is Phase.SUCCEEDED:
        message = "answered from the result cache" if run.cached else "the report is ready"
    else:
        message = f"the run ended {run.status.value}"
    return Condition(FINISHED, True, phase.value, message)


def event_for(run: Run) -> tuple[str, str, str]:
    """(type, reason, message) of the Kubernetes Event announcing a finished run."""
    phase = PHASE_OF_RUN[run.status]
    usage = f"{run.usage.total_tokens} tokens, ${run.cost_usd:.4f}"
    if phase is Phase.SUCCEEDED:
        return "Normal", "RunSucceeded", f"run {run.id} succeeded ({usage})"
    if phase is Phase.CANCELLED:
        return "Normal", "RunCancelled", f"run {run.id} was cancelled ({usage})"
    detail = f"{run.error.type}: {run.error.detail}" if run.error else "no error reported"
    return "Warning", "RunFailed", f"run {run.id} failed: {detail} ({usage})"[:MAX_MESSAGE_CHARS]
