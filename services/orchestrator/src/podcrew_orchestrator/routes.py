"""The public run API, `/v1/runs` (api mode). Routes are thin: the store does the work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from podcrew_core.app import JSONBody
from podcrew_core.errors import PROBLEM_CONTENT_TYPE, Conflict, RunNotFound
from podcrew_core.logging import bind_run
from podcrew_core.schemas import EventType, Run, RunAccepted, RunCreate, RunStatus
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore

router = APIRouter(prefix="/v1", tags=["runs"])

SSE_BLOCK_MS = 15_000
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_CONTENT_TYPE: {}}}


def get_store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


def get_settings(request: Request) -> OrchestratorSettings:
    settings: OrchestratorSettings = request.app.state.settings
    return settings


Store = Annotated[RunStore, Depends(get_store)]
Settings = Annotated[OrchestratorSettings, Depends(get_settings)]


async def _load(store: RunStore, run_id: str) -> Run:
    run = await store.get(run_id)
    if run is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return run


@router.post(
    "/runs",
    status_code=202,
    dependencies=[JSONBody],
    summary="Submit a research question",
    responses={
        200: {"model": Run, "description": "The run finished within `wait` seconds."},
        202: {"model": RunAccepted, "description": "Accepted; poll `Location` for the result."},
        400: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
    },
)
async def create_run(
    body: RunCreate,
    store: Store,
    settings: Settings,
    response: Response,
    wait: Annotated[
        float, Query(ge=0, le=600, description="Seconds to wait for the result before 202.")
    ] = 0,
) -> Run | RunAccepted:
    run = Run(
        id=f"run_{uuid.uuid4().hex}",
        status=RunStatus.QUEUED,
        question=body.question,
        max_subquestions=body.max_subquestions,
        tier=body.tier,
        created_at=datetime.now(UTC),
    )
    bind_run(run.id)
    await store.create(run)
    response.headers["Location"] = f"/v1/runs/{run.id}"
    if wait > 0 and await store.wait_final(run.id, min(wait, settings.max_wait_s)):
        response.status_code = 200
        return await _load(store, run.id)
    return RunAccepted(id=run.id, status=run.status)


@router.get(
    "/runs/{run_id}",
    summary="A run's status, result, usage and cost",
    responses={404: _PROBLEM},
)
async def get_run(run_id: str, store: Store) -> Run:
    return await _load(store, run_id)


@router.delete(
    "/runs/{run_id}",
    summary="Cancel a queued or running run",
    responses={404: _PROBLEM, 409: _PROBLEM},
)
async def cancel_run(run_id: str, store: Store) -> Run:
    run = await _load(store, run_id)
    if run.status.terminal:
        raise Conflict(f"run {run_id} already {run.status.value}", run_status=run.status.value)
    run.status = RunStatus.CANCELLED
    run.finished_at = datetime.now(UTC)
    if not await store.transition(run, EventType.RUN_CANCELLED, {"reason": "cancelled by client"}):
        run = await _load(store, run_id)
        raise Conflict(f"run {run_id} already {run.status.value}", run_status=run.status.value)
    return run


@router.get(
    "/runs/{run_id}/events",
    summary="Progress as Server-Sent Events, resumable with Last-Event-ID",
    response_class=EventSourceResponse,
    responses={404: _PROBLEM, 200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    run_id: str,
    store: Store,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    await _load(store, run_id)
    after = last_event_id if last_event_id and _valid_id(last_event_id) else "0"

    async def stream() -> AsyncIterator[ServerSentEvent]:
        cursor = after
        while True:
            events = await store.read_events(run_id, cursor, block_ms=SSE_BLOCK_MS)
            for event in events:
                yield ServerSentEvent(data=event.data, event=event.type, id=event.id)
                cursor = event.id
                if event.terminal:
                    return
            if not events:
                status = await store.status(run_id)
                if status is None:  # the run expired while we watched
                    return

    return EventSourceResponse(stream(), ping=10, send_timeout=30)


def _valid_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())
