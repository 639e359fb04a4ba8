"""The public run API, `/v1/runs` (api mode). Routes are thin: the store does the work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import orjson
import structlog
from fastapi import APIRouter, Header, Query, Response
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from podcrew_core.contracts.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    Conflict,
    RunNotFound,
)
from podcrew_core.contracts.schemas import (
    Estimate,
    Evaluation,
    EvaluationCreate,
    EventType,
    Feedback,
    FeedbackCreate,
    Run,
    RunAccepted,
    RunCreate,
    RunStatus,
)
from podcrew_core.runtime.app import JSONBody
from podcrew_core.runtime.logging import bind_run, log_run_audit
from podcrew_orchestrator.deps import (
    LLM,
    FeedbackDep,
    Hub,
    Settings,
    Slots,
    Store,
    Streams,
    SubmissionsDep,
    Tenant,
    User,
)
from podcrew_orchestrator.estimate import estimate
from podcrew_orchestrator.hub import (
    VALID_STREAM_ID,
    EventHub,
    InvalidStreamId,
    StreamUnreadable,
    stream_id,
)
from podcrew_orchestrator.keys import is_run_id
from podcrew_orchestrator.store import RunEvent, RunStore

router = APIRouter(prefix="/v1", tags=["runs"])

SSE_CLOSE_GRACE_S = 2.0  # time for the closing event to reach the client
SSE_RETRY_MS = 500
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_CONTENT_TYPE: {}}}
# What a JSON body on a run adds to a route's problems: unreadable, too big, not JSON, invalid.
_BODY_PROBLEMS = (400, 413, 415, 422)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's problem+json answers, by status, for the OpenAPI document."""
    return dict.fromkeys(sorted(statuses), _PROBLEM)


async def load_run(store: RunStore, run_id: str, tenant: str) -> Run:
    """The run, if it exists and belongs to `tenant`; another tenant's run does not exist.

    An id that is not a run id's shape names no run: it answers as a missing run does,
    before any key is built from it."""
    run = await store.get(run_id) if is_run_id(run_id) else None
    if run is None or run.tenant != tenant:
        raise RunNotFound(f"no run with id {run_id!r}")
    return run


@router.post(
    "/runs",
    status_code=202,
    response_model=Run | RunAccepted,
    dependencies=[JSONBody],
    summary="Submit a research question",
    responses={
        200: {"model": Run, "description": "The run finished within `wait` seconds."},
        202: {"model": RunAccepted, "description": "Accepted; poll `Location` for the result."},
        **_problems(*_BODY_PROBLEMS, 401, 409, 429, 503),
    },
)
async def create_run(
    body: RunCreate,
    tenant: Tenant,
    store: Store,
    hub: Hub,
    settings: Settings,
    submissions: SubmissionsDep,
    slots: Slots,
    response: Response,
    wait: Annotated[
        float, Query(ge=0, le=600, description="Seconds to wait for the result before 202.")
    ] = 0,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Same key and body: the same run. Same key, other body: 409.",
        ),
    ] = None,
) -> Run | RunAccepted | Response:
    async with slots.hold():
        submitted = await submissions.submit(tenant, body, idempotency_key)
        run = submitted.run
        bind_run(run.id)
        response.headers["Location"] = f"/v1/runs/{run.id}"
        if run.status.terminal:
            response.status_code = 200
            return run
        if wait > 0 and await hub.wait_final(run.id, min(wait, settings.max_wait_s)):
            return await _final(store, run.id)
    if not submitted.created:
        response.status_code = 200 if run.status.terminal else 202
    return RunAccepted(id=run.id, status=run.status)


async def _final(store: RunStore, run_id: str) -> Response:
    """The finished run as stored: its JSON is what serialising `Run` gives, so it is sent
    as is rather than parsed, validated and serialised again (a Run with its report). The
    caller's own submission returned the run, so it is the caller's tenant's."""
    data = await store.get_json(run_id)
    if data is None:  # expired in the meantime
        raise RunNotFound(f"no run with id {run_id!r}")
    return Response(data, media_type="application/json", headers={"Location": f"/v1/runs/{run_id}"})


@router.post(
    "/estimate",
    dependencies=[JSONBody],
    summary="Expected tokens and cost of a question, before running it",
    responses={400: _PROBLEM, 401: _PROBLEM, 415: _PROBLEM, 422: _PROBLEM},
)
async def estimate_run(body: RunCreate, tenant: Tenant, llm: LLM) -> Estimate:
    return estimate(body, llm)


@router.get(
    "/runs/{run_id}",
    summary="A run's status, result, usage and cost",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def get_run(run_id: str, tenant: Tenant, store: Store, feedback: FeedbackDep) -> Run:
    return await feedback.attach(await load_run(store, run_id, tenant))


@router.post(
    "/runs/{run_id}/feedback",
    status_code=201,
    dependencies=[JSONBody],
    summary="Give feedback on a finished run's report (once per run and user)",
    responses={
        200: {"model": Feedback, "description": "The same feedback was given before."},
        201: {"model": Feedback, "description": "Stored."},
        **_problems(*_BODY_PROBLEMS, 401, 404, 409),
    },
)
async def give_feedback(
    run_id: str,
    body: FeedbackCreate,
    tenant: Tenant,
    user: User,
    store: Store,
    feedback: FeedbackDep,
    response: Response,
) -> Feedback:
    run = await load_run(store, run_id, tenant)
    given, stored_now = await feedback.give(run, user, body)
    if not stored_now:
        response.status_code = 200
    return given


@router.get(
    "/runs/{run_id}/feedback",
    summary="Every user's feedback on a run, oldest first",
    responses={401: _PROBLEM, 404: _PROBLEM},
)
async def list_feedback(
    run_id: str, tenant: Tenant, store: Store, feedback: FeedbackDep
) -> list[Feedback]:
    await load_run(store, run_id, tenant)
    return await feedback.feedback(run_id)


@router.put(
    "/runs/{run_id}/evaluation",
    dependencies=[JSONBody],
    summary="Store an evaluator's scores for a finished run (replaces earlier ones)",
    responses=_problems(*_BODY_PROBLEMS, 401, 404, 409),
)
async def evaluate_run(
    run_id: str, body: EvaluationCreate, tenant: Tenant, store: Store, feedback: FeedbackDep
) -> Evaluation:
    return await feedback.evaluate(await load_run(store, run_id, tenant), body)


@router.delete(
    "/runs/{run_id}",
    summary="Cancel a queued or running run",
    responses={404: _PROBLEM, 409: _PROBLEM},
)
async def cancel_run(run_id: str, tenant: Tenant, store: Store) -> Run:
    run = await load_run(store, run_id, tenant)
    if run.status.terminal:
        raise Conflict(f"run {run_id} already {run.status.value}", run_status=run.status.value)
    was_queued = run.status is RunStatus.QUEUED
    run.status = RunStatus.CANCELLED
    run.finished_at = datetime.now(UTC)
    if not await store.transition(run, EventType.RUN_CANCELLED, {"reason": "cancelled by client"}):
        run = await load_run(store, run_id, tenant)
        raise Conflict(f"run {run_id} already {run.status.value}", run_status=run.status.value)
    if was_queued:  # a running run is audited by its worker, with what it spent
        bind_run(run.id)
        log_run_audit(run)
    return run


@router.get(
    "/runs/{run_id}/events",
    summary="Progress as Server-Sent Events, resumable with Last-Event-ID",
    response_class=EventSourceResponse,
    responses={400: _PROBLEM, 404: _PROBLEM, 200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    run_id: str,
    tenant: Tenant,
    store: Store,
    hub: Hub,
    streams: Streams,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    await load_run(store, run_id, tenant)
    after = await _resume_point(store, run_id, last_event_id)
    streams.check_capacity()

    shutdown = anyio.Event()  # set by sse-starlette when the server starts shutting down

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with streams.hold():
            async for event in _follow(store, hub, run_id, after, shutdown):
                yield event

    return EventSourceResponse(
        stream(),
        ping=10,
        send_timeout=30,
        shutdown_event=shutdown,
        shutdown_grace_period=SSE_CLOSE_GRACE_S,
    )


async def _follow(
    store: RunStore, hub: EventHub, run_id: str, after: str, shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    """The run's events from `after` on, to its final event.

    The hub rides out Redis errors, reading on from where it was. A stream the server ends
    early (it is shutting down, or a read of the route's own failed after the Redis
    client's retries) ends with a `stream.closing` event, so the client reconnects, to
    another replica if need be, and resumes from its Last-Event-ID without a gap."""
    try:
        # The status first: when it is final, the final event is already written, so what
        # follows `after` now is all there will ever be (or nothing, for a client that
        # already has the final event).
        status = await store.status(run_id)
        if status is None or status.terminal:
            cursor = after
            while events := await store.read_events(run_id, cursor):
                for event in events:
                    yield _sse(event)
                    if event.terminal:
                        return
                cursor = events[-1].id
            return
        async with hub.subscribe(run_id, after) as subscription:
            stop = asyncio.ensure_future(shutdown.wait())  # set by sse-starlette
            stop.add_done_callback(lambda _: subscription.close())
            try:
                while events := await subscription.next():
                    for event in events:
                        yield _sse(event)
                        if event.terminal:
                            return
            finally:
                stop.cancel()
        yield _closing("server shutting down")
    except StreamUnreadable:  # reconnecting would meet the same refusal
        yield _closing("event stream unreadable", resume=False)
    except RedisError as exc:
        structlog.get_logger(__name__).warning(
            "event_stream_closed", reason="state store unavailable", error=repr(exc)
        )
        yield _closing("state store unavailable")


def _sse(event: RunEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.data, event=event.type, id=event.id)


def _closing(reason: str, *, resume: bool = True) -> ServerSentEvent:
    """The last event of a stream the server ends early; it has no id, so the client's
    Last-Event-ID still names the last real event and a reconnect resumes without a gap."""
    return ServerSentEvent(
        data=orjson.dumps({"reason": reason, "resume": resume}).decode(),
        event="stream.closing",
        retry=SSE_RETRY_MS,
    )


async def _resume_point(store: RunStore, run_id: str, last_event_id: str | None) -> str:
    """Where a stream resumes: after the client's `Last-Event-ID`, or from the start.

    An id that Redis would refuse, or that is past the run's latest event (so not one this
    stream sent), is a 400 before the stream starts: followed, it would either fail every
    read or wait for events that never come, and a reconnect would do the same again."""
    if not last_event_id:
        return "0"
    try:
        position = stream_id(last_event_id)
    except InvalidStreamId as exc:
        raise BadRequest(f"Last-Event-ID: {exc}") from exc
    latest = await store.last_event_id(run_id)
    if latest is None or position > stream_id(latest):
        raise BadRequest(
            f"Last-Event-ID {last_event_id[:40]!r} is past the run's latest event "
            f"({latest or 'none'}): {VALID_STREAM_ID}"
        )
    return "{}-{}".format(*position)
