"""The base every podcrew service is built on: `/healthz`, `/readyz`, `/metrics`,
problem+json errors, request metrics and the run id bound into every log line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podcrew_core.contracts.errors import NotReady, PayloadTooLarge, UnsupportedMediaType
from podcrew_core.contracts.hop import RUN_ID_HEADER
from podcrew_core.runtime.auth import require_service_token
from podcrew_core.runtime.logging import configure_logging
from podcrew_core.runtime.metrics import (
    HTTP_SERVER_DURATION,
    HTTP_SERVER_IN_FLIGHT,
    HTTP_SERVER_REQUESTS,
    Children,
    collect_latest,
    mark_process_dead,
)
from podcrew_core.runtime.problems import install_problem_handlers, problem_response
from podcrew_core.runtime.settings import ServiceSettings
from podcrew_core.runtime.tracing import configure_tracing, flush_tracing, instrument_app

ReadinessCheck = Callable[[], Awaitable[None]]
_UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz"})
_READINESS_TIMEOUT_S = 2.0
_RUN_ID_HEADER = RUN_ID_HEADER.encode()
# Two lookups per request: from a dict, not `labels()`.
_REQUESTS = Children(HTTP_SERVER_REQUESTS)
_DURATION = Children(HTTP_SERVER_DURATION)

log = structlog.get_logger(__name__)


@dataclass
class Readiness:
    """What `/readyz` checks. A draining service reports not ready so traffic moves away."""

    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    draining: bool = False

    async def failures(self) -> dict[str, str]:
        if self.draining:
            return {"service": "draining"}

        async def run(check: ReadinessCheck) -> str | None:
            try:
                await asyncio.wait_for(check(), _READINESS_TIMEOUT_S)
            except Exception as exc:  # any failure of a dependency means "not ready"
                return f"{exc.__class__.__name__}: {exc}"[:200]
            return None

        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        return {n: r for n, r in zip(names, results, strict=True) if r is not None}


class _BodyLimit:
    """Counts the request body as the app reads it: once more than `limit` bytes have
    arrived it reads no further, so a chunked body (no `Content-Length`) is refused at the
    limit instead of being buffered whole.

    Past the limit the app is told the client went away (`http.disconnect`), which ends its
    read; whatever it then answers is dropped, and the middleware sends 413 itself.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._received = 0
        self.exceeded = False

    async def __call__(self) -> Message:
        if self.exceeded:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                self.exceeded = True
                return {"type": "http.disconnect"}
        return message


def _too_large(limit: int, path: str) -> ASGIApp:
    """413 problem+json that also closes the connection: the rest of the body is never
    read, and the connection cannot carry another request after it."""
    response = problem_response(PayloadTooLarge(f"request body exceeds {limit} bytes"), path)
    response.headers["connection"] = "close"
    return response


class ObservabilityMiddleware:
    """Counts and times every request by route template, binds the run id for logging,
    refuses bodies over the size limit (by `Content-Length` before the app runs, and while
    the app reads any other body), and says in a `Server-Timing: app;dur=<ms>` header how
    long the app took to start its answer.

    Written as raw ASGI rather than `BaseHTTPMiddleware`, which would buffer streaming (SSE)
    responses and add a task per request.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _too_large(self.max_body_bytes, scope["path"])(scope, receive, send)
            return
        run_id = headers.get(_RUN_ID_HEADER)
        structlog.contextvars.clear_contextvars()
        if run_id:
            structlog.contextvars.bind_contextvars(run_id=run_id.decode("latin-1"))
        status = 500
        started = time.perf_counter()
        body = _BodyLimit(receive, self.max_body_bytes)
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if body.exceeded and not response_started:
                return  # the app's answer to a cut-off body; the 413 replaces it
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                # How long the app took before answering (for a plain JSON answer: all of
                # it), so a caller can tell its hop's own cost from the work behind it.
                elapsed_ms = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"server-timing", b"app;dur=%.3f" % elapsed_ms),
                ]
            await send(message)

        HTTP_SERVER_IN_FLIGHT.inc()
        try:
            try:
                await self.app(scope, body, send_wrapper)
            except Exception:
                # A failure caused by cutting the body off is the 413 below, not a 500.
                if not body.exceeded or response_started:
                    raise
            if body.exceeded and not response_started:
                status = 413
                await _too_large(self.max_body_bytes, scope["path"])(scope, receive, send)
        finally:
            HTTP_SERVER_IN_FLIGHT.dec()
            self._observe(scope, status, started)

    @staticmethod
    def _observe(scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if template not in _UNTRACKED:
            method = scope["method"]
            _REQUESTS(method, template, str(status)).inc()
            _DURATION(method, template).observe(time.perf_counter() - started)


async def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.app.state.readiness
    return readiness


async def require_json(request: Request) -> None:
    """415 for a body that is not JSON, instead of a confusing validation error."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'nothing'}"
        )


JSONBody = Depends(require_json)


def _new_app(
    title: str,
    version: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    docs_token: SecretStr | None,
) -> FastAPI:
    """The FastAPI app, its docs at FastAPI's usual paths or, with a `docs_token`, behind it
    (`_serve_docs`). An empty token guards nothing, as `require_service_token` reads it."""
    if docs_token is None or not docs_token.get_secret_value():
        return FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs(app, docs_token)
    return app


def _serve_docs(app: FastAPI, token: SecretStr) -> None:
    """`/openapi.json` for callers that present `token`, and no `/docs` or `/redoc`.

    An internal service's schema maps what an attacker inside the network could call, so it
    is not handed to anyone who asks; the interactive pages go, because a browser loading
    them cannot present the token to fetch the schema they render."""

    @app.get(
        "/openapi.json",
        include_in_schema=False,
        dependencies=[Depends(require_service_token(token))],
    )
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())


def create_service_app(
    *,
    title: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    settings: ServiceSettings | None = None,
    description: str = "",
    service: str | None = None,
    docs_token: SecretStr | None = None,
) -> FastAPI:
    """A FastAPI app with podcrew's health, readiness, metrics and error handling, refusing
    bodies over `settings.max_body_bytes` (no settings: the defaults). With a `service`
    name, its lifespan first configures JSON logging at `settings.log_level` and tracing for
    that service, before the service's own `lifespan` builds anything. With a `docs_token`
    (an internal service's token), its OpenAPI document is behind that token (`_serve_docs`)."""
    settings = settings or ServiceSettings.model_construct()

    @asynccontextmanager
    async def observed_lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            configure_logging(service, settings.log_level)
            configure_tracing(service)
        try:
            async with lifespan(app):
                yield
        finally:
            flush_tracing()  # the spans of the last requests
            mark_process_dead()  # this worker's in-flight gauges (multiprocess mode)

    app = _new_app(title, version, description, observed_lifespan, docs_token)
    app.state.readiness = Readiness()
    install_problem_handlers(app)
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=settings.max_body_bytes)
    instrument_app(app)  # server spans, when tracing is configured (podcrew_core.runtime.tracing)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is serving")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: this service's own dependencies answer",
        responses={503: {"description": "Not ready", "content": {"application/problem+json": {}}}},
    )
    async def readyz(readiness: Annotated[Readiness, Depends(get_readiness)]) -> dict[str, Any]:
        failures = await readiness.failures()
        if failures:
            raise NotReady("; ".join(f"{k}: {v}" for k, v in failures.items()), checks=failures)
        return {"status": "ready", "checks": sorted(readiness.checks)}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(collect_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
