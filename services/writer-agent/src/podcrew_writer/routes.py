"""`POST /v1/write` and its streaming twin `POST /v1/write/stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.hop import Hop
from podcrew_core.contracts.problem import to_problem
from podcrew_core.contracts.schemas import WriteDelta, WriteRequest, WriteResponse
from podcrew_core.llm import LLMProvider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import JSONBody
from podcrew_core.runtime.disconnect import unless_disconnected
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.scope import hop_context, open_hop
from podcrew_core.runtime.tracing import record_prompt_version
from podcrew_writer import compose
from podcrew_writer.deps import Resources, Writer

router = APIRouter(prefix="/v1", tags=["writer"])
log = structlog.get_logger(__name__)
_WRITING = "writing the report"


def _hop(request: Request, writer: Resources) -> Hop:
    settings, llm = writer.config.service, writer.config.llm
    return Hop.from_headers(
        request.headers,
        default_deadline_s=settings.default_deadline_s,
        default_retries=llm.retry_budget,
        what=_WRITING,
    )


def _draft(body: WriteRequest, writer: Resources) -> compose.Draft:
    model = body.model or writer.config.llm.write_model
    return compose.prepare(body, model, writer.config.service.max_tokens)


_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **_PROBLEM}
    for code, text in (
        (400, "The body is not valid JSON, or a hop header is malformed"),
        (401, "No valid service token"),
        (402, "A budget is spent"),
        (415, "The body is not JSON"),
        (422, "The body does not match WriteRequest"),
        (503, "No writer slot freed up in time"),
        (504, "The deadline expired, or was too close to start"),
    )
}


@router.post(
    "/write", dependencies=[JSONBody], summary="Write the report in one response", responses=_ERRORS
)
async def write(request: Request, body: WriteRequest, writer: Writer) -> WriteResponse:
    hop = _hop(request, writer)
    async with (
        open_hop(hop, writer.ledger, what=_WRITING),
        writer.slots.hold(hop.deadline),
    ):
        response = await unless_disconnected(
            request, compose.write(writer.provider, _draft(body, writer))
        )
    record_prompt_version(response.prompt_version)
    return response.model_copy(update={"retries": hop.retries.spent})


@router.post(
    "/write/stream",
    dependencies=[JSONBody],
    summary="Write the report as Server-Sent Events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`delta` events with text, then one `done` event (a "
            "WriteResponse) or one `error` event (problem details).",
            "content": {"text/event-stream": {}},
        },
        **_ERRORS,
    },
)
async def write_stream(request: Request, body: WriteRequest, writer: Writer) -> EventSourceResponse:
    # Refused here, before the stream starts, if the deadline is too close.
    hop = _hop(request, writer)
    draft = _draft(body, writer)
    record_prompt_version(compose.WRITER_PROMPTS.version)
    writer.slots.check_capacity()  # a full writer says 503 up front rather than in the stream
    flush_s = writer.config.service.delta_flush_s
    return EventSourceResponse(
        _events(writer.provider, draft, hop, writer.slots, writer.ledger, flush_s), ping=15
    )


async def _events(
    provider: LLMProvider,
    draft: compose.Draft,
    hop: Hop,
    slots: Admission,
    ledger: Ledger,
    flush_s: float,
) -> AsyncIterator[ServerSentEvent]:
    # The hop is opened here because the stream runs after the route has returned; without a
    # timeout around the block, which a generator cannot hold across its yields: each LLM
    # call is bounded by the hop's deadline instead.
    try:
        with hop_context(hop, ledger):
            async with slots.hold(hop.deadline):
                async for item in _stream(provider, draft, hop, flush_s):
                    yield item
    except PodcrewError as exc:
        log.warning("write_stream_failed", error=exc.slug, detail=exc.detail)
        yield ServerSentEvent(data=orjson.dumps(to_problem(exc)).decode(), event="error")


async def _stream(
    provider: LLMProvider, draft: compose.Draft, hop: Hop, flush_s: float
) -> AsyncIterator[ServerSentEvent]:
    async for item in compose.write_stream(provider, draft, flush_s=flush_s):
        if isinstance(item, WriteResponse):
            done = item.model_copy(update={"retries": hop.retries.spent})
            yield ServerSentEvent(data=done.model_dump_json(), event="done")
        else:
            yield ServerSentEvent(data=WriteDelta(text=item).model_dump_json(), event="delta")
