"""The simulated Messages API's HTTP side: the app factory, its routes and `run_simulator`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podcrew_core.runtime.app import create_service_app
from podcrew_core.runtime.logging import configure_logging
from podcrew_core.runtime.serve import serve
from podcrew_simulator.batches import batches
from podcrew_simulator.engine import CallRecord, Simulator, answer
from podcrew_simulator.ratelimit import retry_after
from podcrew_simulator.settings import FaultProfile, SimulatorSettings
from podcrew_simulator.wire import (
    ErrorType,
    error_json,
    message_json,
    new_message_id,
    new_request_id,
    parse_request,
    sse,
    stream_events,
)

log = structlog.get_logger(__name__)

_ERROR_TYPES: dict[int, ErrorType] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_FAULT_ERRORS: dict[str, tuple[int, ErrorType, str]] = {
    "429": (429, "rate_limit_error", "Simulated rate limit: too many requests."),
    "529": (529, "overloaded_error", "Overloaded"),
    "500": (500, "api_error", "Internal server error"),
}
# New objects between two collections of the youngest generation (Python's default: 700).
_GC_YOUNG_THRESHOLD = 50_000


class SimulatedDrop(Exception):
    """Raised to cut a connection on purpose.

    ASGI has no message that breaks a connection; an app that fails after starting its
    response is the one thing every server answers by closing it, so that is how the
    simulator drops a call.
    """


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging each deliberate drop as an application crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDrop))


class RequestIdMiddleware:
    """A `request-id` header on every response, as the API sends, errors and 404s included.

    Raw ASGI rather than `BaseHTTPMiddleware`, which would buffer the event streams.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("request-id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


class _DroppedResponse(Response):
    """A response that breaks off: headers, then no body. Uvicorn answers an app that fails
    before starting its response with a 500 of its own, so a drop must start one first, and
    without a Content-Length, which would make the empty body a complete one."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_headers = [(b"content-type", b"application/json")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        raise SimulatedDrop("connection dropped before the body")


class _PlainRoute(Route):
    """A Starlette route that, like FastAPI's own, records itself as `scope["route"]`, which
    FastAPI's router leaves to its routes: the request metrics are labelled with its path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(
    request: Request,
    status: int,
    kind: ErrorType,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error in the API's shape."""
    request_id = getattr(request.state, "request_id", None)
    return _json(error_json(kind, message, request_id), status, headers)


async def get_simulator(request: Request) -> Simulator:
    """The simulator's state, built in the lifespan. Async although it never awaits: FastAPI
    runs a plain `def` dependency in its threadpool, a thread hand-off on every call that
    cost about a fifth of the simulator's CPU."""
    simulator: Simulator = request.app.state.simulator
    return simulator


SimulatorDep = Annotated[Simulator, Depends(get_simulator)]

router = APIRouter()


@router.post(
    "/v1/messages",
    tags=["messages"],
    summary="Create a message (Anthropic Messages API)",
    response_model=None,
)
async def create_message(request: Request) -> Response:
    """Answer as the Messages API would: a message, or an event stream when `stream` is
    true; or, as the fault profile draws it, an error, a stall or a dropped connection."""
    # Takes the request alone, so that it also runs as a plain Starlette endpoint
    # (see `create_simulator_app`), which is how the simulator serves it.
    sim: Simulator = request.app.state.simulator
    call = sim.calls.open(request.state.request_id)
    try:
        response = await _messages(request, sim, call)
    except BaseException:
        # Whatever ended the call early (a crash, a cancelled task) still ends its record.
        sim.calls.close(call, 500)
        raise
    # A stream ends its record itself, when its last event is out.
    if not isinstance(response, StreamingResponse):
        sim.calls.close(call, response.status_code)
    return response


@dataclass(frozen=True)
class _Reply:
    """An answer serialized for the wire before the call waits out its latency.

    So a waiting call holds a few byte strings rather than the parsed request and the
    answer: under load hundreds of calls wait at once, and the garbage collector promoted
    all their objects to its oldest generation, which made full collections frequent.
    """

    profile: FaultProfile  # the call's snapshot of the fault profile
    answering: float  # when answering began: the latency counts from there
    drop: bool
    message: bytes = b""  # a message's JSON body
    events: list[tuple[str, bytes]] | None = None  # or a stream's events: (type, as sent)
    headers: dict[str, str] | None = None  # the rate-limit headers, when limits are set


async def _messages(request: Request, sim: Simulator, call: CallRecord) -> Response:
    reply = await _answer(request, sim, call)
    if isinstance(reply, Response):  # refused, or failed by a fault
        return reply
    if reply.events is not None:
        return StreamingResponse(
            _stream(sim, call, reply.events, reply.profile, drop=reply.drop),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **(reply.headers or {})},
        )
    remaining = reply.profile.latency_s - (time.perf_counter() - reply.answering)
    if remaining > 0:
        await asyncio.sleep(remaining)
    if reply.drop:
        return _DroppedResponse()
    return Response(reply.message, headers=reply.headers, media_type="application/json")


def _over_rate_limit(
    request: Request, sim: Simulator, model: str, limits: tuple[int, int, int]
) -> Response | None:
    """The 429 for a call past the account's rate limits, if it is."""
    if not any(limits):
        return None
    wait_s = sim.limits.admit(model, limits)
    if wait_s <= 0:
        return None
    headers = sim.limits.headers(model, limits)
    headers["retry-after"] = retry_after(wait_s)
    message = f"This request would exceed the rate limit for {model}."
    return error_response(request, 429, "rate_limit_error", message, headers)


async def _answer(request: Request, sim: Simulator, call: CallRecord) -> Response | _Reply:
    """The reply, ready to send; or the error response that takes its place."""
    if sim.settings.require_api_key and not (
        request.headers.get("x-api-key") or request.headers.get("authorization")
    ):
        return error_response(request, 401, "authentication_error", "x-api-key header is required")
    try:
        body = parse_request(await request.body())
    except ValueError as exc:
        return error_response(request, 400, "invalid_request_error", str(exc))
    call.describe(body)
    # A snapshot: `PUT /_sim/faults` mid-call must not change a call already under way.
    profile = sim.profile
    call.fault = sim.dice.draw(profile)
    if call.fault in _FAULT_ERRORS:
        status, kind, message = _FAULT_ERRORS[call.fault]
        headers = {"retry-after": f"{profile.retry_after_s:g}"} if status in (429, 529) else None
        return error_response(request, status, kind, message, headers)
    limits = profile.rate_limits()
    refusal = _over_rate_limit(request, sim, body.model, limits)
    if refusal is not None:
        return refusal
    if call.fault == "slow":
        await asyncio.sleep(profile.slow_s)
    # After a stall the answer still takes its usual time: the stall comes on top.
    answering = time.perf_counter()
    reply = answer(body, sim.cache)
    rate_headers = sim.limits.answered(body.model, limits, reply.usage) if any(limits) else None
    call.usage = reply.usage
    call.stop_reason = reply.stop_reason
    drop = call.fault == "drop"
    if body.stream:
        events = stream_events(
            message_id=new_message_id(),
            model=body.model,
            content=reply.content,
            stop_reason=reply.stop_reason,
            usage=reply.usage,
        )
        events_sent = [(e["type"], sse(e)) for e in events]
        return _Reply(profile, answering, drop, events=events_sent, headers=rate_headers)
    created = message_json(
        message_id=new_message_id(),
        model=body.model,
        content=reply.content,
        stop_reason=reply.stop_reason,
        usage=reply.usage,
    )
    return _Reply(profile, answering, drop, message=orjson.dumps(created), headers=rate_headers)


async def _stream(
    sim: Simulator,
    call: CallRecord,
    events: list[tuple[str, bytes]],
    profile: FaultProfile,
    *,
    drop: bool,
) -> AsyncIterator[bytes]:
    """The events with the profile's timing: `ttft_s` before the first delta, then
    `stream_chunk_delay_s` between deltas; a dropped stream breaks off halfway.

    Events not separated by a pause go out together, as one body chunk: the bytes on the
    wire are the same, but each chunk costs a trip through every middleware's `send` and a
    socket write, which for a reply of ~150 events was about a third of a stream's CPU."""
    deltas = [i for i, (kind, _) in enumerate(events) if kind == "content_block_delta"]
    # Cut after half the deltas, so the client has seen a partial answer; with no deltas,
    # right after message_start.
    cut_after = deltas[(len(deltas) - 1) // 2] if deltas else 0
    sent_deltas = 0
    pending: list[bytes] = []
    try:
        for index, (kind, event) in enumerate(events):
            if kind == "content_block_delta":
                delay = profile.ttft_s if sent_deltas == 0 else profile.stream_chunk_delay_s
                if delay > 0:
                    if pending:
                        yield b"".join(pending)
                        pending.clear()
                    await asyncio.sleep(delay)
                sent_deltas += 1
            pending.append(event)
            if drop and index == cut_after:
                yield b"".join(pending)
                raise SimulatedDrop("connection dropped mid-stream")
        yield b"".join(pending)
    finally:
        sim.calls.close(call, 200)


ops = APIRouter(prefix="/_sim", tags=["simulator"])


@ops.get("/calls", summary="Every call received, oldest first", response_model=None)
async def list_calls(sim: SimulatorDep) -> Response:
    # The log's own JSON: FastAPI's encoder is slow on the 100k records a load test leaves.
    return Response(sim.calls.calls_json(), media_type="application/json")


@ops.delete("/calls", summary="Forget every call and reset the counts")
async def clear_calls(sim: SimulatorDep) -> dict[str, int]:
    return {"cleared": sim.calls.clear()}


@ops.get("/stats", summary="Calls by status and by fault, and the tokens used")
async def stats(sim: SimulatorDep) -> dict[str, Any]:
    return sim.calls.stats()


@ops.put("/faults", summary="Change latencies and fault rates; returns the effective profile")
async def put_faults(
    request: Request,
    sim: SimulatorDep,
    changes: Annotated[dict[str, Any], Body(examples=[{"rate_429": 0.2, "retry_after_s": 0.5}])],
) -> Response:
    try:
        profile = sim.update_profile(changes)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        message = f"{where}: {error['msg']}" if where else error["msg"]
        return error_response(request, 400, "invalid_request_error", message)
    log.info("simulator_faults_changed", **changes)
    return _json(profile.model_dump())


@ops.delete("/cache", summary="Forget every cached prompt prefix")
async def clear_cache(sim: SimulatorDep) -> dict[str, int]:
    return {"cleared": sim.cache.clear()}


def _install_error_handlers(app: FastAPI) -> None:
    """Errors in the API's shape rather than podcrew's problem+json: clients of this server
    are Anthropic clients."""

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return error_response(request, status, kind, str(exc.detail), dict(exc.headers or {}))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if not errors:
            return error_response(request, 400, "invalid_request_error", "invalid request")
        where = ".".join(str(part) for part in errors[0].get("loc", ()))
        message = f"{where}: {errors[0].get('msg', 'invalid')}"
        return error_response(request, 400, "invalid_request_error", message)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, SimulatedDrop):
            log.exception("unhandled_error", path=request.url.path)
        return error_response(request, 500, "api_error", "Internal server error")

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def create_simulator_app(settings: SimulatorSettings | None = None) -> FastAPI:
    """The simulated Anthropic Messages API, answering with podcrew's deterministic model."""
    settings = settings or SimulatorSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("llm-simulator", settings.log_level)
        app.state.simulator = Simulator(settings)
        quiet = _QuietDrops()
        uvicorn_errors = logging.getLogger("uvicorn.error")
        uvicorn_errors.addFilter(quiet)
        # Under load hundreds of calls wait out their latency at once, each keeping ~100
        # objects of the server's and the framework's alive; at the default threshold (700
        # new objects) the collector ran every few calls, walked them all and promoted them,
        # for about 5% of the simulator's CPU. Their garbage is freed by reference counting, so
        # collecting rarely costs no memory to speak of.
        thresholds = gc.get_threshold()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *thresholds[1:])
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            uvicorn_errors.removeFilter(quiet)

    app = create_service_app(
        title="podcrew simulated Messages API",
        version=version("podcrew-core"),
        lifespan=lifespan,
        settings=settings,
        description="Anthropic's Messages API wire protocol, answered by podcrew's "
        "deterministic model, with injectable latency and faults, for tests and load tests.",
    )
    _install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    # The route every LLM call takes is served by a plain Starlette route placed ahead of
    # FastAPI's (which stays, for the OpenAPI schema and /docs): FastAPI's per-request
    # routing, dependency and exit-stack machinery took about a fifth of a call's CPU, and
    # under load the simulator's CPU is taken from the system it is benchmarking. Both run
    # the same endpoint, inside the same middleware (request ids, metrics, error handlers).
    app.router.routes.insert(0, _PlainRoute("/v1/messages", create_message, methods=["POST"]))
    app.include_router(router)
    app.include_router(batches)
    app.include_router(ops)
    return app


def run_simulator(settings: SimulatorSettings | None = None) -> None:
    """Serve the simulator until SIGTERM (`podcrew simulate-llm`)."""
    settings = settings or SimulatorSettings()
    serve(create_simulator_app(settings), settings)
