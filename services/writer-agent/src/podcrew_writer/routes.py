"""`POST /v1/write` and its streaming twin `POST /v1/write/stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from podcrew_core.app import JSONBody
from podcrew_core.deadline import DEADLINE_HEADER, Deadline
from podcrew_core.errors import PodcrewError
from podcrew_core.llm import LLMProvider, LLMSettings
from podcrew_core.schemas import WriteDelta, WriteRequest, WriteResponse
from podcrew_writer import compose
from podcrew_writer.settings import WriterSettings

router = APIRouter(prefix="/v1", tags=["writer"])
log = structlog.get_logger(__name__)

_MIN_TIME_S = 0.05


def get_provider(request: Request) -> LLMProvider:
    provider: LLMProvider = request.app.state.provider
    return provider


def _draft(request: Request, body: WriteRequest) -> compose.Draft:
    settings: WriterSettings = request.app.state.settings
    llm: LLMSettings = request.app.state.llm_settings
    deadline = Deadline.from_header(
        request.headers.get(DEADLINE_HEADER), settings.default_deadline_s
    )
    deadline.require(_MIN_TIME_S, "writing the report")
    return compose.prepare(body, llm.write_model, settings.max_tokens)


Provider = Annotated[LLMProvider, Depends(get_provider)]


@router.post("/write", dependencies=[JSONBody], summary="Write the report in one response")
async def write(request: Request, body: WriteRequest, provider: Provider) -> WriteResponse:
    return await compose.write(provider, _draft(request, body))


@router.post(
    "/write/stream",
    dependencies=[JSONBody],
    summary="Write the report as Server-Sent Events",
    response_description="`delta` events with text, then one `done` event (a WriteResponse) "
    "or one `error` event (problem details).",
)
async def write_stream(
    request: Request, body: WriteRequest, provider: Provider
) -> EventSourceResponse:
    draft = _draft(request, body)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            async for item in compose.write_stream(provider, draft):
                if isinstance(item, WriteResponse):
                    yield ServerSentEvent(data=item.model_dump_json(), event="done")
                else:
                    yield ServerSentEvent(
                        data=WriteDelta(text=item).model_dump_json(), event="delta"
                    )
        except PodcrewError as exc:
            log.warning("write_stream_failed", error=exc.slug, detail=exc.detail)
            yield ServerSentEvent(data=orjson.dumps(exc.to_problem()).decode(), event="error")

    return EventSourceResponse(events(), ping=15)
