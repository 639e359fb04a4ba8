"""Deletion and expiry decisions of the driver, on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from podcrew_operator.clients.kubernetes import KubernetesClient
from podcrew_operator.driver import (
    Runtime,
    cancel_on_delete,
    deletion_remaining_s,
    expiry_remaining_s,
)
from podcrew_operator.errors import OrchestratorUnavailable
from podcrew_operator.settings import OperatorSettings
from podcrew_operator.slots import Slots

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class Orchestrator:
    def __init__(self, error: Exception | None = None, cancelled: bool = True) -> None:
        self.error, self.cancelled = error, cancelled
        self.calls: list[str] = []

    async def cancel(self, run_id: str) -> bool:
        self.calls.append(run_id)
        if self.error:
            raise self.error
        return self.cancelled


def runtime(orchestrator: Any, now: datetime = NOW) -> Runtime:
    return Runtime(
        settings=OperatorSettings(finalizer_timeout_s=60),
        orchestrator=orchestrator,
        kube=KubernetesClient(),
        slots=Slots(1),
        clock=lambda: now,
    )


class Events(list[tuple[str, str, str]]):
    def __call__(self, type: str, reason: str, message: str) -> None:
        self.append((type, reason, message))


async def test_an_unfinished_run_is_cancelled_once() -> None:
    orchestrator, events = Orchestrator(), Events()
    status = {"runId": "run_1", "phase": "Running"}
    await cancel_on_delete(runtime(orchestrator), status, "2026-01-01T12:00:00Z", events)
    assert orchestrator.calls == ["run_1"]
    assert events[0][:2] == ("Normal", "RunCancelled")


@pytest.mark.parametrize("status", [{}, {"runId": "run_1", "phase": "Succeeded"}])
async def test_nothing_to_cancel(status: dict[str, str]) -> None:
    orchestrator = Orchestrator()
    await cancel_on_delete(runtime(orchestrator), status, None, Events())
    assert orchestrator.calls == []


async def test_an_unreachable_orchestrator_is_retried_until_the_bound_then_let_go() -> None:
    down = Orchestrator(error=OrchestratorUnavailable("down"))
    status = {"runId": "run_1", "phase": "Running"}
    with pytest.raises(OrchestratorUnavailable):
        await cancel_on_delete(
            runtime(down, NOW + timedelta(seconds=30)), status, "2026-01-01T12:00:00Z", Events()
        )
    events = Events()
    late = runtime(down, NOW + timedelta(seconds=61))
    assert await cancel_on_delete(late, status, "2026-01-01T12:00:00Z", events) is None
    assert events[0][:2] == ("Warning", "CancelAbandoned")
    assert deletion_remaining_s(late, "2026-01-01T12:00:00Z") == -1


def test_expiry() -> None:
    rt = runtime(Orchestrator())
    done = {"phase": "Succeeded", "finishedAt": "2026-01-01T11:59:00Z"}
    assert expiry_remaining_s(rt, {"ttlSecondsAfterFinished": 120}, done) == 60
    assert expiry_remaining_s(rt, {"ttlSecondsAfterFinished": 0}, done) == -60
    assert expiry_remaining_s(rt, {}, done) is None
    assert expiry_remaining_s(rt, {"ttlSecondsAfterFinished": 5}, {"phase": "Running"}) is None
