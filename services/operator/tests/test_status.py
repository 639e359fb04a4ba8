"""Status as a pure function of the run: phases, usage, conditions with honest transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from podcrew_core.contracts.schemas import Evaluation, Run, RunError, RunResult, RunStatus, Usage
from podcrew_operator.status import (
    FINISHED,
    SUBMITTED,
    Condition,
    Phase,
    awaits_evaluation,
    event_for,
    is_finished,
    merge_conditions,
    progress_condition,
    run_fields,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(status: RunStatus, **extra: object) -> Run:
    return Run.model_validate(
        {
            "id": "run_1",
            "status": status,
            "question": "What?",
            "budget": {"max_tokens": 1000, "max_cost_usd": 1.0, "deadline_s": 60},
            "created_at": T0,
            **extra,
        }
    )


def test_each_run_status_has_its_phase() -> None:
    phases = {s: run_fields(run(s))["phase"] for s in RunStatus}
    assert phases == {
        RunStatus.QUEUED: "Pending",
        RunStatus.RUNNING: "Running",
        RunStatus.SUCCEEDED: "Succeeded",
        RunStatus.FAILED: "Failed",
        RunStatus.CANCELLED: "Cancelled",
    }
    assert [p for p in Phase if p.finished] == [Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED]
    assert is_finished({"phase": "Cancelled"}) and not is_finished({"phase": "Running"})
    assert not is_finished({}) and not is_finished({"phase": "Bogus"})


def test_usage_times_and_id() -> None:
    done = run(
        RunStatus.SUCCEEDED,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        usage=Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=5, cost_usd=0.5),
        cost_usd=0.0123456789,
    )
    assert run_fields(done) == {
        "phase": "Succeeded",
        "runId": "run_1",
        "usage": {"tokens": 125, "costUsd": 0.012346},
        "startedAt": "2026-01-02T03:04:05Z",
        "finishedAt": "2026-01-02T03:04:08Z",
    }
    assert "startedAt" not in run_fields(run(RunStatus.QUEUED))


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = merge_conditions(
        [], [Condition(SUBMITTED, False, "OrchestratorUnavailable", "down")], generation=1, now=T0
    )
    later = T0 + timedelta(minutes=1)
    same = merge_conditions(
        first,
        [Condition(SUBMITTED, False, "OrchestratorUnavailable", "still down")],
        generation=1,
        now=later,
    )
    assert same[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert same[0]["message"] == "still down"
    flipped = merge_conditions(
        same,
        [Condition(SUBMITTED, True, "Accepted", "ok"), Condition(FINISHED, False, "Pending", "q")],
        generation=2,
        now=later,
    )
    assert [c["type"] for c in flipped] == [SUBMITTED, FINISHED]
    assert flipped[0] == {
        "type": SUBMITTED,
        "status": "True",
        "reason": "Accepted",
        "message": "ok",
        "lastTransitionTime": "2026-01-02T03:05:05Z",
        "observedGeneration": 2,
    }
    assert (
        len(
            merge_conditions(
                first, [Condition(SUBMITTED, True, "A", "x" * 5000)], generation=None, now=T0
            )[0]["message"]
        )
        == 1024
    )


def test_finished_condition_and_event_carry_the_error() -> None:
    failed = run(
        RunStatus.FAILED, error=RunError(type="budget-exceeded", detail="run token budget")
    )
    condition = progress_condition(failed)
    assert (condition.status, condition.reason) == (True, "Failed")
    assert condition.message == "budget-exceeded: run token budget"
    kind, reason, message = event_for(failed)
    assert (kind, reason) == ("Warning", "RunFailed") and "budget-exceeded" in message
    ok = run(RunStatus.SUCCEEDED, result=RunResult(report="r", sources=[]))
    assert event_for(ok)[:2] == ("Normal", "RunSucceeded")
    assert event_for(run(RunStatus.CANCELLED))[:2] == ("Normal", "RunCancelled")
    assert progress_condition(run(RunStatus.RUNNING)) == Condition(
        FINISHED, False, "Running", "running"
    )


def test_an_evaluated_run_shows_its_scores_and_stops_being_awaited() -> None:
    evaluation = Evaluation(
        scores={"citation_validity": 0.9, "support": 0.75},
        evaluator="podcrew-eval lexical",
        evaluated_at=T0 + timedelta(minutes=5),
    )
    unevaluated = run_fields(run(RunStatus.SUCCEEDED))
    assert "evaluation" not in unevaluated
    assert awaits_evaluation(unevaluated)
    evaluated = run_fields(run(RunStatus.SUCCEEDED, evaluation=evaluation))
    assert evaluated["evaluation"] == {
        "scores": {"citation_validity": 0.9, "support": 0.75},
        "evaluator": "podcrew-eval lexical",
        "evaluatedAt": "2026-01-02T03:09:05Z",
    }
    assert not awaits_evaluation(evaluated)
    # Only a succeeded run has a report worth evaluating; one not yet submitted has no run.
    assert not awaits_evaluation(run_fields(run(RunStatus.FAILED)))
    assert not awaits_evaluation({"phase": "Succeeded"})
