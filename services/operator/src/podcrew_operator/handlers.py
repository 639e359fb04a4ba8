"""kopf handlers for AgentRun: thin, typed, and explicit about retrying.

Each handler hands the work to `driver.py` and turns what it raises into kopf's verdict in
one place (`_verdicts`): `Retryable` becomes `kopf.TemporaryError` with a delay that honours
the server's Retry-After (else jittered backoff); an invalid or refused run becomes
`kopf.PermanentError`. Nothing is left for kopf to guess.

- `run` (daemon, while the AgentRun is unfinished): submit once, follow, store the report.
- `expire` (daemon, once finished with `ttlSecondsAfterFinished`): delete it when due.
- `cancel` (on delete, behind the finalizer): cancel the unfinished run, within a bound.
- `runs_in_flight` (index): submitted, unfinished AgentRuns, for `max_concurrent_runs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf
from kopf.on import DaemonDecorator

from .clients.kubernetes import Connection, KubernetesClient
from .clients.orchestrator import OrchestratorClient, create_http_client
from .driver import (
    RunDriver,
    Runtime,
    Target,
    await_evaluation,
    cancel_on_delete,
    deletion_remaining_s,
    expire,
)
from .errors import ObjectGone, OperatorError, Retryable
from .readiness import ReadinessServer
from .resource import ANNOTATIONS_PREFIX, FINALIZER, GROUP, PLURAL, VERSION
from .retry import delay_s
from .settings import OperatorSettings
from .slots import Slots
from .status import awaits_evaluation, is_finished

registry = kopf.OperatorRegistry()

# A daemon that does not exit this long after it was told to (it always checks) is cancelled.
DAEMON_CANCELLATION_TIMEOUT_S = 10.0
LOGIN_RETRY_S = 1.0


@dataclass
class Memo:
    """kopf's memo: the settings from the entry point, the runtime built at start-up."""

    settings: OperatorSettings
    kube: KubernetesClient = field(default_factory=KubernetesClient)
    runtime: Runtime | None = None
    readiness: ReadinessServer | None = None

    async def not_ready(self) -> str | None:
        """The readiness probe's question: started, logged in, and the api ready."""
        if self.runtime is None:
            return "the operator is starting"
        if not self.kube.connected:
            return "the operator has not logged in to the cluster yet"
        return await self.runtime.orchestrator.not_ready()

    def rt(self) -> Runtime:
        if self.runtime is None:
            raise kopf.TemporaryError("the operator is still starting", delay=LOGIN_RETRY_S)
        return self.runtime


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """kopf's own settings, as podcrew wants them (applied by the entry point)."""
    kopf_settings.persistence.finalizer = FINALIZER
    # Annotations only: the CRD's structural schema would prune kopf's `status.kopf`.
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # Log lines become Events only from warnings up; the operator posts its own Events.
    kopf_settings.posting.level = logging.WARNING
    # The CRD is installed before the operator (Helm's crds/): one discovery at start is
    # enough, and no cluster-wide rights to watch CRDs or namespaces are needed.
    kopf_settings.scanning.disabled = True
    kopf_settings.queueing.worker_limit = max(4, settings.max_concurrent_runs)
    kopf_settings.networking.request_timeout = max(30.0, settings.request_timeout_s * 3)


# --- verdicts -------------------------------------------------------------------------------


def retry_delay(runtime: Runtime, error: Retryable, attempt: int) -> float:
    s = runtime.settings
    return delay_s(
        attempt, error.retry_after_s, base_s=s.retry_base_delay_s, max_s=s.retry_max_delay_s
    )


@contextmanager
def _verdicts(
    runtime: Runtime, attempt: int, *, max_delay_s: float | None = None
) -> Iterator[None]:
    try:
        yield
    except ObjectGone:
        return  # deleted under our feet: nothing left to do for it
    except Retryable as exc:
        delay = retry_delay(runtime, exc, attempt)
        if max_delay_s is not None:
            delay = min(delay, max(max_delay_s, 0.1))
        raise kopf.TemporaryError(str(exc), delay=delay) from exc
    except OperatorError as exc:
        raise kopf.PermanentError(str(exc)) from exc


@dataclass(frozen=True)
class _Stop:
    """kopf's daemon stopper as the driver's `StopSignal`."""

    stopped: kopf.DaemonStopped

    def is_set(self) -> bool:
        return self.stopped.is_set()

    def deleted(self) -> bool:
        reason = self.stopped.reason
        return reason is not None and bool(reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)

    async def sleep(self, seconds: float) -> bool:
        return bool(await self.stopped.wait(seconds))


@dataclass(frozen=True)
class _Events:
    body: kopf.Body

    def __call__(self, type: str, reason: str, message: str) -> None:
        kopf.event(self.body, type=type, reason=reason, message=message)


def _target(body: kopf.Body) -> Target:
    meta = body.metadata
    return Target(
        namespace=str(meta.namespace),
        name=str(meta.name),
        uid=str(meta.uid),
        generation=meta.get("generation"),
    )


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return not is_finished(status)


def _in_flight(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("runId")) and not is_finished(status)


def _expires(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and is_finished(status)


# --- activities -----------------------------------------------------------------------------


@kopf.on.startup(registry=registry)
async def start(memo: Memo, logger: kopf.Logger, **_: Any) -> None:
    settings = memo.settings
    memo.runtime = Runtime(
        settings=settings,
        orchestrator=OrchestratorClient(create_http_client(settings)),
        kube=memo.kube,
        slots=Slots(settings.max_concurrent_runs),
    )
    if settings.readiness_endpoint:
        memo.readiness = ReadinessServer(settings.readiness_endpoint, memo.not_ready)
        await memo.readiness.start()
    logger.info(
        "podcrew operator started: api %s, at most %d runs in flight",
        settings.api_url,
        settings.max_concurrent_runs,
    )


@kopf.on.cleanup(registry=registry)
async def stop(memo: Memo, **_: Any) -> None:
    if memo.readiness is not None:
        await memo.readiness.stop()
    if memo.runtime is not None:
        await memo.runtime.orchestrator.http.aclose()
    await memo.kube.aclose()


@kopf.on.login(registry=registry)
async def login(
    settings: kopf.OperatorSettings, memo: Memo, logger: kopf.Logger, **_: Any
) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else a kubeconfig; the operator's own client uses
    the same credentials as kopf."""
    info = kopf.login_with_service_account(settings=settings, logger=logger)
    info = info or kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is not None:
        verify = info.as_ssl_context() if info.server.startswith("https:") else True
        await memo.kube.connect(Connection(info.server, info.as_http_headers(), verify))
    return info


# --- AgentRun -------------------------------------------------------------------------------


def _agentrun_daemon(handler_id: str, *, when: Callable[..., bool]) -> DaemonDecorator:
    """A daemon per AgentRun while `when` holds, cancelled if it has not exited
    `DAEMON_CANCELLATION_TIMEOUT_S` after it was told to stop."""
    return kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        id=handler_id,
        when=when,
        cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT_S,
        registry=registry,
    )


@kopf.index(GROUP, VERSION, PLURAL, when=_in_flight, registry=registry)
def runs_in_flight(uid: str | None, **_: Any) -> dict[str | None, bool]:
    return {uid: True}


@_agentrun_daemon("run", when=_unfinished)
async def run(
    body: kopf.Body,
    spec: kopf.Spec,
    stopped: kopf.DaemonStopped,
    retry: int,
    memo: Memo,
    logger: kopf.Logger,
    runs_in_flight: kopf.Index[str, bool] | None = None,
    **_: Any,
) -> None:
    runtime = memo.rt()
    status = dict(body.get("status") or {})  # live: what the last attempt recorded
    driver = RunDriver(runtime, _target(body), status, _Events(body), logger)
    with _verdicts(runtime, retry):
        await driver.drive(
            spec, status.get("runId"), lambda: list(runs_in_flight or ()), _Stop(stopped)
        )


@_agentrun_daemon("expire", when=_expires)
async def expire_finished(
    body: kopf.Body,
    spec: kopf.Spec,
    stopped: kopf.DaemonStopped,
    retry: int,
    memo: Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    runtime = memo.rt()
    with _verdicts(runtime, retry):
        if await expire(
            runtime, _target(body), spec, dict(body.get("status") or {}), _Stop(stopped)
        ):
            logger.info("deleted: ttlSecondsAfterFinished has passed")


def _awaits_evaluation(status: kopf.Status, **_: Any) -> bool:
    return awaits_evaluation(status)


@_agentrun_daemon("evaluation", when=_awaits_evaluation)
async def mirror_evaluation(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    retry: int,
    memo: Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    runtime = memo.rt()
    with _verdicts(runtime, retry):
        status = dict(body.get("status") or {})
        if await await_evaluation(runtime, _target(body), status, _Stop(stopped)):
            logger.info("run %s evaluated: scores in .status.evaluation", status["runId"])


@kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
async def cancel(body: kopf.Body, meta: kopf.Meta, retry: int, memo: Memo, **_: Any) -> None:
    runtime = memo.rt()
    deleted_at = meta.get("deletionTimestamp")
    remaining = deletion_remaining_s(runtime, deleted_at)
    with _verdicts(runtime, retry, max_delay_s=remaining):
        await cancel_on_delete(runtime, dict(body.get("status") or {}), deleted_at, _Events(body))
