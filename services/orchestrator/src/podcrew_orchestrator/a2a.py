"""podcrew as an A2A agent: the Agent Card at `/.well-known/agent-card.json` and the A2A
JSON-RPC endpoint at `/a2a` (api mode).

A task is a run: its id is the run id, its state the run's status, and its artifact, once
the run succeeds, the report with its sources. The operations call what the REST routes call
(`Submissions.submit`, the run store, the event hub, the cancel route's function), in this
process: an A2A task is a run like any other, listed, billed, limited and cancelled as one,
and it lives in Redis, so any api replica answers for it. The SDK's own task store and agent
executor are not used for the same reason: they keep tasks in one process.

Authentication is the public API's: the same API keys, the same tenant, the same 401
problem before the JSON-RPC request is read. The card is public, as A2A discovery expects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from a2a.helpers.proto_helpers import new_data_part
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    InternalError,
    InvalidParamsError,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    PushNotificationNotSupportedError,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    UnsupportedOperationError,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PROTOCOL_VERSION_1_0
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import Request as StarletteRequest

from podcrew_core.contracts.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    Conflict,
    PodcrewError,
    RunNotFound,
    ValidationFailed,
)
from podcrew_core.contracts.schemas import EventType, Run, RunCreate, RunResult, RunStatus
from podcrew_core.runtime.logging import bind_run
from podcrew_orchestrator import routes
from podcrew_orchestrator.deps import ApiResources, KeyRingDep, Tenant
from podcrew_orchestrator.store import RunEvent

A2A_PATH = "/a2a"
REPORT_ARTIFACT = "report"
# What a message's metadata may set on its run, beside the question (its text parts) and the
# thread (its contextId).
RUN_OPTIONS = ("max_subquestions", "tier", "priority", "budget")

_STATES = {
    RunStatus.QUEUED: TaskState.TASK_STATE_SUBMITTED,
    RunStatus.RUNNING: TaskState.TASK_STATE_WORKING,
    RunStatus.SUCCEEDED: TaskState.TASK_STATE_COMPLETED,
    RunStatus.FAILED: TaskState.TASK_STATE_FAILED,
    RunStatus.CANCELLED: TaskState.TASK_STATE_CANCELED,
}
_FINAL_STATES = {
    EventType.RUN_SUCCEEDED.value: TaskState.TASK_STATE_COMPLETED,
    EventType.RUN_FAILED.value: TaskState.TASK_STATE_FAILED,
    EventType.RUN_CANCELLED.value: TaskState.TASK_STATE_CANCELED,
}

router = APIRouter(tags=["a2a"])


def agent_card(base_url: str, *, auth: bool) -> AgentCard:
    """The card of the research agent served at `base_url` (bearer API keys when `auth`)."""
    card = AgentCard(
        name="podcrew",
        description=(
            "A research crew: plans a question into sub-questions, researches them in "
            "parallel with its tools and writes a report whose claims cite their sources."
        ),
        version="0.1.0",
        supported_interfaces=[
            AgentInterface(
                url=f"{base_url}{A2A_PATH}",
                protocol_binding="JSONRPC",
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/markdown", "application/json"],
        skills=[
            AgentSkill(
                id="research",
                name="Research a question",
                description=(
                    "Answers a research question with a cited Markdown report. The message's "
                    "text is the question; its contextId continues a conversation; metadata "
                    "may set max_subquestions, tier, priority and budget as the run API does."
                ),
                tags=["research", "report", "citations"],
                examples=[
                    "How do Python generators work?",
                    "What are the trade-offs between Redis Streams and Kafka for a job queue?",
                ],
                output_modes=["text/markdown", "application/json"],
            )
        ],
    )
    if auth:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    description="A podcrew API key, as for the public run API.",
                )
            )
        )
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


def run_task(run: Run) -> Task:
    """The A2A task of `run`: its state, the question as history and, once it succeeded, the
    report artifact."""
    task = Task(
        id=run.id,
        context_id=_context(run),
        status=_status(run),
        history=[
            Message(
                message_id=f"{run.id}-question",
                context_id=_context(run),
                task_id=run.id,
                role=Role.ROLE_USER,
                parts=[Part(text=run.question)],
            )
        ],
    )
    if run.result is not None:
        task.artifacts.append(report_artifact(run.result))
    return task


def report_artifact(result: RunResult) -> Artifact:
    """The report (Markdown) and its numbered sources (JSON), as one artifact."""
    sources = result.model_dump(mode="json", include={"sources", "unresearched"})
    return Artifact(
        artifact_id=REPORT_ARTIFACT,
        name="report",
        description="The cited report; claims cite the sources as [n].",
        parts=[
            Part(text=result.report, media_type="text/markdown"),
            new_data_part(sources, media_type="application/json"),
        ],
    )


def _plain(value: Any) -> Any:
    """A protobuf Struct's value as plain Python (numbers come as floats, as JSON's do)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "keys"):
        return {key: _plain(value[key]) for key in value.keys()}  # noqa: SIM118
    return [_plain(item) for item in value]


def _context(run: Run) -> str:
    return run.thread_id or run.id


def _status(run: Run) -> TaskStatus:
    status = TaskStatus(state=_STATES[run.status])
    if run.error is not None:
        status.message.CopyFrom(_agent_text(run, f"{run.error.type}: {run.error.detail}"))
    return status


def _agent_text(run: Run, text: str) -> Message:
    return Message(
        message_id=f"{run.id}-status",
        context_id=_context(run),
        task_id=run.id,
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )


def run_create(message: Message, metadata: dict[str, Any]) -> RunCreate:
    """The run a message asks for: its text parts are the question, its contextId the thread."""
    question = "\n".join(part.text for part in message.parts if part.text).strip()
    if not question:
        raise InvalidParamsError(message="the message has no text: send the question as text")
    options = {key: metadata[key] for key in RUN_OPTIONS if key in metadata}
    try:
        return RunCreate.model_validate(
            {**options, "question": question, "thread_id": message.context_id or None}
        )
    except ValidationError as exc:
        raise InvalidParamsError(message=f"the message does not make a valid run: {exc}") from exc


@contextmanager
def a2a_errors() -> Iterator[None]:
    """podcrew's errors as A2A's: a missing run is a missing task, a final run cannot be
    cancelled, bad input is invalid params; any other keeps its problem type, status and
    retryability in the error's data."""
    try:
        yield
    except RunNotFound as exc:
        raise TaskNotFoundError(message=exc.detail) from exc
    except Conflict as exc:
        raise TaskNotCancelableError(message=exc.detail, data=exc.extra or None) from exc
    except (BadRequest, ValidationFailed) as exc:
        raise InvalidParamsError(message=exc.detail) from exc
    except PodcrewError as exc:
        data = {"type": exc.type_uri, "status": exc.status, "retryable": exc.retryable}
        if "Retry-After" in exc.headers:
            data["retry_after"] = exc.headers["Retry-After"]
        raise InternalError(message=exc.detail, data=data) from exc


def event_update(run: Run, event: RunEvent) -> TaskStatusUpdateEvent | TaskArtifactUpdateEvent:
    """One run event as an A2A update: report text as it is written is an artifact chunk,
    anything else a status update whose metadata carries the event as the run API sends it."""
    data = orjson.loads(event.data)
    if event.type == EventType.WRITER_DELTA:
        return TaskArtifactUpdateEvent(
            task_id=run.id,
            context_id=_context(run),
            artifact=Artifact(artifact_id=REPORT_ARTIFACT, parts=[Part(text=data["text"])]),
            append=True,
        )
    state = _FINAL_STATES.get(event.type, TaskState.TASK_STATE_WORKING)
    metadata = {"event": event.type, "event_id": event.id, "data": data}
    status = TaskStatus(state=state)
    status.message.CopyFrom(_agent_text(run, _describe(event.type, data)))
    return TaskStatusUpdateEvent(
        task_id=run.id, context_id=_context(run), status=status, metadata=metadata
    )


def _describe(kind: str, data: dict[str, Any]) -> str:
    """A line a person reads for an event."""
    match kind:
        case EventType.RUN_PLANNED:
            return "planned: " + "; ".join(data.get("sub_questions", []))
        case EventType.RESEARCH_STARTED | EventType.RESEARCH_FINISHED:
            return f"{kind}: {data.get('sub_question', '')}".rstrip(": ")
        case EventType.TOOL_CALLED:
            return f"tool {data.get('name', '?')} called"
        case EventType.RUN_FAILED:
            return f"failed: {data.get('error', data)}"
        case _:
            return kind


class RunTasks(RequestHandler):
    """The A2A operations on podcrew's runs; `context.state` holds the caller's tenant and
    the api's resources (`ContextBuilder`)."""

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        resources, tenant = _caller(context)
        with a2a_errors():
            async with resources.admission.hold():
                run = await _submit(resources, tenant, params)
                if params.configuration.return_immediately or run.status.terminal:
                    return run_task(run)  # as submitted: nothing was awaited
                await resources.hub.wait_final(run.id, resources.config.service.max_wait_s)
            return run_task(await routes.load_run(resources.store, run.id, tenant))

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        resources, tenant = _caller(context)
        with a2a_errors():
            resources.streams.check_capacity()
            async with resources.admission.hold():
                run = await _submit(resources, tenant, params)
        async for update in _follow(resources, run):
            yield update

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        resources, tenant = _caller(context)
        with a2a_errors():
            resources.streams.check_capacity()
            run = await routes.load_run(resources.store, params.id, tenant)
        async for update in _follow(resources, run):
            yield update

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        resources, tenant = _caller(context)
        with a2a_errors():
            return run_task(await routes.load_run(resources.store, params.id, tenant))

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        resources, tenant = _caller(context)
        with a2a_errors():
            return run_task(await routes.cancel_run(params.id, tenant, resources.store))

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        raise UnsupportedOperationError(message="listing tasks is not supported")

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise UnsupportedOperationError(message="podcrew has no extended agent card")


def _caller(context: ServerCallContext) -> tuple[ApiResources, str]:
    resources = context.state["podcrew_resources"]
    if not isinstance(resources, ApiResources):  # mounted on an app that is not the api
        raise InternalError(message="the A2A endpoint is not served by the run API")
    return resources, str(context.state["podcrew_tenant"])


async def _submit(resources: ApiResources, tenant: str, params: SendMessageRequest) -> Run:
    """Submit the message's run as `POST /v1/runs` does; the message id is the idempotency
    key, so a message sent again names the same run."""
    if params.message.task_id:
        raise UnsupportedOperationError(
            message="a finished research task takes no more input: send a new message "
            "with the same contextId to follow up"
        )
    metadata = _plain(params.metadata) if params.HasField("metadata") else {}
    body = run_create(params.message, metadata)
    key = f"a2a-{params.message.message_id}" if params.message.message_id else None
    submitted = await resources.submissions.submit(tenant, body, key)
    bind_run(submitted.run.id)
    return submitted.run


async def _follow(
    resources: ApiResources, run: Run
) -> AsyncIterator[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent]:
    """The task as it is now, then each of its run's events as an update, to the final one;
    a succeeded run's report artifact (whole, with its sources) comes before its last status."""
    yield run_task(run)
    async with resources.streams.hold(), resources.hub.subscribe(run.id) as subscription:
        while events := await subscription.next():
            for event in events:
                if event.type == EventType.RUN_SUCCEEDED:
                    final = await resources.store.get(run.id)
                    if final is not None and final.result is not None:
                        yield TaskArtifactUpdateEvent(
                            task_id=run.id,
                            context_id=_context(run),
                            artifact=report_artifact(final.result),
                            last_chunk=True,
                        )
                yield event_update(run, event)
                if event.terminal:
                    return


class ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context plus the tenant the endpoint authenticated and the api's
    resources, for `RunTasks`."""

    def build(self, request: StarletteRequest) -> ServerCallContext:
        context = super().build(request)
        # The SDK reads the A2A-Version header from here; the API key must not travel further.
        headers = context.state.get("headers", {})
        for secret in ("authorization", "x-api-key"):
            headers.pop(secret, None)
        context.state["podcrew_tenant"] = request.state.podcrew_tenant
        context.state["podcrew_resources"] = request.app.state.resources
        return context


_dispatcher = JsonRpcDispatcher(RunTasks(), ContextBuilder(), enable_v0_3_compat=True)


@router.get(AGENT_CARD_WELL_KNOWN_PATH, summary="The A2A Agent Card of the research agent")
async def get_agent_card(request: Request, keyring: KeyRingDep) -> JSONResponse:
    base_url = str(request.base_url).rstrip("/")
    return JSONResponse(agent_card_to_dict(agent_card(base_url, auth=bool(keyring))))


@router.post(
    A2A_PATH,
    summary="A2A JSON-RPC: SendMessage, SendStreamingMessage, GetTask, CancelTask, "
    "SubscribeToTask (and their A2A 0.3 names, message/send ...)",
    responses={401: {"content": {PROBLEM_CONTENT_TYPE: {}}}},
)
async def a2a_rpc(request: Request, tenant: Tenant) -> Response:
    request.state.podcrew_tenant = tenant
    return await _dispatcher.handle_requests(request)
