"""Every error a service can raise, mapped once to an RFC 9457 `application/problem+json`
response with a stable `type`, written by the one codec (`contracts.problem.to_problem`):
podcrew's own errors by their class, FastAPI's validation errors, Starlette's HTTP
exceptions, a Redis outage (503, retry) and anything unexpected (a logged 500 that says no
more)."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from podcrew_core.contracts.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    Conflict,
    MalformedJSON,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PodcrewError,
    StateStoreUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from podcrew_core.contracts.problem import to_problem
from podcrew_core.runtime.redis import TRANSIENT_ERRORS
from podcrew_core.runtime.resilience import should_retry_status

log = structlog.get_logger(__name__)


def problem_response(error: PodcrewError, instance: str | None = None) -> JSONResponse:
    return JSONResponse(
        to_problem(error, instance),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def _validation_error(exc: RequestValidationError) -> PodcrewError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJSON("The request body could not be parsed as JSON.")
    simplified = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    first = simplified[0] if simplified else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return ValidationFailed(f"{where}: {first['msg']}", errors=simplified)


_HTTP_STATUS_ERRORS: dict[int, type[PodcrewError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    503: Overloaded,
}


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to problem+json, exactly once."""

    async def on_podcrew_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PodcrewError)
        if exc.status >= 500:
            log.warning("request_failed", error=exc.slug, detail=exc.detail)
        return problem_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_error(exc), request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        cls = _HTTP_STATUS_ERRORS.get(exc.status_code)
        if cls is None:
            error: PodcrewError = PodcrewError(
                str(exc.detail), retryable=should_retry_status(exc.status_code)
            )
            body = to_problem(error, request.url.path) | {
                "status": exc.status_code,
                "title": str(exc.detail),
                "type": "about:blank",
            }
            return JSONResponse(body, status_code=exc.status_code, media_type=PROBLEM_CONTENT_TYPE)
        error = cls(str(exc.detail), headers=dict(exc.headers or {}))
        return problem_response(error, request.url.path)

    async def on_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Redis restarting or failing over: the request may succeed in a moment. A handled
        # 503 (not the catch-all 500 path) also keeps the client's connection alive.
        log.warning("state_store_unavailable", path=request.url.path, error=type(exc).__name__)
        error = StateStoreUnavailable(
            "the state store is unavailable for a moment; retry", headers={"Retry-After": "1"}
        )
        return problem_response(error, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(
            PodcrewError("An unexpected error occurred; it has been logged."), request.url.path
        )

    app.add_exception_handler(PodcrewError, on_podcrew_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    for store_error in TRANSIENT_ERRORS:
        app.add_exception_handler(store_error, on_store_unavailable)
    app.add_exception_handler(Exception, on_unexpected)
