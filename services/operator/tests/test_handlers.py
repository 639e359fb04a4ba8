"""The handlers' verdicts: what kopf is told to do with each kind of failure."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from podcrew_operator.clients.kubernetes import KubernetesClient
from podcrew_operator.clients.orchestrator import OrchestratorClient
from podcrew_operator.driver import Runtime
from podcrew_operator.errors import (
    InvalidSpec,
    KubernetesUnavailable,
    ObjectGone,
    OrchestratorRejected,
    OrchestratorUnavailable,
    RunLost,
)
from podcrew_operator.handlers import _verdicts, configure, registry
from podcrew_operator.resource import FINALIZER
from podcrew_operator.settings import OperatorSettings
from podcrew_operator.slots import Slots


@pytest.fixture
def runtime() -> Runtime:
    settings = OperatorSettings(retry_base_delay_s=1.0, retry_max_delay_s=8.0)
    return Runtime(
        settings=settings,
        orchestrator=OrchestratorClient(None),  # type: ignore[arg-type]  # never called here
        kube=KubernetesClient(),
        slots=Slots(1),
    )


def verdict(
    runtime: Runtime, error: Exception, attempt: int = 0, **kw: Any
) -> BaseException | None:
    try:
        with _verdicts(runtime, attempt, **kw):
            raise error
    except BaseException as exc:
        return exc
    return None


def test_what_can_pass_is_temporary_with_the_servers_delay(runtime: Runtime) -> None:
    told = verdict(runtime, OrchestratorUnavailable("429", retry_after_s=7.0))
    assert isinstance(told, kopf.TemporaryError) and told.delay == 7.0
    backoff = verdict(runtime, KubernetesUnavailable("503"), attempt=10)
    assert isinstance(backoff, kopf.TemporaryError) and 0.1 <= backoff.delay <= 8.0
    # On delete, never wait past the bound on the finalizer.
    bounded = verdict(runtime, OrchestratorUnavailable("down", retry_after_s=30), max_delay_s=2.0)
    assert isinstance(bounded, kopf.TemporaryError) and bounded.delay == 2.0


@pytest.mark.parametrize(
    "error", [InvalidSpec("bad"), OrchestratorRejected("422", status=422), RunLost("gone")]
)
def test_what_cannot_pass_is_permanent(runtime: Runtime, error: Exception) -> None:
    told = verdict(runtime, error)
    assert isinstance(told, kopf.PermanentError) and str(error) in str(told)


def test_a_deleted_object_ends_quietly_and_bugs_stay_bugs(runtime: Runtime) -> None:
    assert verdict(runtime, ObjectGone("gone")) is None
    assert isinstance(verdict(runtime, KeyError("bug")), KeyError)  # kopf's default: retry + log


def test_kopf_is_configured_for_podcrew() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, OperatorSettings(max_concurrent_runs=50))
    assert settings.persistence.finalizer == FINALIZER
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.scanning.disabled is True
    assert settings.posting.level == logging.WARNING
    assert settings.queueing.worker_limit == 50


def test_the_registry_has_the_handlers() -> None:
    resource = kopf.Resource("podcrew.dev", "v1alpha1", "agentruns")
    ids = {h.id for h in registry._spawning.get_all_handlers()}
    assert ids == {"run", "expire", "evaluation"}
    assert {h.id for h in registry._changing.get_all_handlers()} == {"cancel"}
    assert {h.id for h in registry._indexing.get_all_handlers()} == {"runs_in_flight"}
    assert all(
        h.selector is not None and h.selector.check(resource)
        for h in registry._changing.get_all_handlers()
    )
