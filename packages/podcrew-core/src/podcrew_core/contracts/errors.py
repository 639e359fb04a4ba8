"""Errors by meaning: each class has its HTTP status, a stable slug (the problem `type`)
and whether repeating the same call can succeed.

Code raises the class that says what went wrong (`RunNotFound`, `UpstreamTimeout`, ...);
`podcrew_core.runtime.problems` maps every one of them, and every framework error, to an
`application/problem+json` response once. Nothing here imports a web framework, so every
process (the operator included) can share these types.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://podcrew.dev/problems/"


class PodcrewError(Exception):
    """Base of every error podcrew raises on purpose."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(PodcrewError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class MalformedJSON(BadRequest):
    slug = "malformed-json"
    title = "Request body is not valid JSON"


class Unauthorized(PodcrewError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid credentials"


class NotFound(PodcrewError):
    status = 404
    slug = "not-found"
    title = "Not found"


class RunNotFound(NotFound):
    slug = "run-not-found"
    title = "Run not found"


class MethodNotAllowed(PodcrewError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(PodcrewError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(PodcrewError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(PodcrewError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(PodcrewError):
    status = 422
    slug = "validation-failed"
    title = "Request failed validation"


class Overloaded(PodcrewError):
    status = 503
    slug = "overloaded"
    title = "Service overloaded"


class StateStoreUnavailable(PodcrewError):
    status = 503
    slug = "state-store-unavailable"
    title = "State store unavailable"


class NotReady(PodcrewError):
    status = 503
    slug = "not-ready"
    title = "Service not ready"


class DeadlineExceeded(PodcrewError):
    status = 504
    slug = "deadline-exceeded"
    title = "Deadline exceeded"


class UpstreamError(PodcrewError):
    """A service podcrew depends on (an agent, the LLM, Redis) failed."""

    status = 502
    slug = "upstream-error"
    title = "Upstream service failed"


class UpstreamTimeout(UpstreamError):
    status = 504
    slug = "upstream-timeout"
    title = "Upstream service timed out"


class LLMError(UpstreamError):
    """An LLM call failed. `retryable` says whether the same call may succeed if repeated;
    `retry_after_s` is the upstream's own advice (the `retry-after` header), if any."""

    slug = "llm-error"
    title = "LLM call failed"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        upstream_status: int | None = None,
        retry_after_s: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.upstream_status = upstream_status
        self.retry_after_s = retry_after_s

    @property
    def reason(self) -> str:
        """A bounded label for metrics: the upstream status code or the error kind."""
        return str(self.upstream_status) if self.upstream_status else self.slug


class LLMRateLimited(LLMError):
    slug = "llm-rate-limited"
    title = "The LLM provider is rate limiting"
    retryable = True


class LLMOverloaded(LLMError):
    slug = "llm-overloaded"
    title = "The LLM provider is overloaded"
    retryable = True


class LLMServerError(LLMError):
    slug = "llm-server-error"
    title = "The LLM provider failed"
    retryable = True


class LLMUnavailable(LLMError):
    slug = "llm-unavailable"
    title = "The LLM provider could not be reached"
    retryable = True


class LLMTimeout(LLMError):
    status = 504
    slug = "llm-timeout"
    title = "The LLM call timed out"
    retryable = True


class LLMRejected(LLMError):
    """The provider refused the request itself (400, 401, 403, 404, 413, 422): retrying
    the same request cannot help."""

    slug = "llm-rejected"
    title = "The LLM provider rejected the request"


class CircuitOpen(LLMError):
    status = 503
    slug = "circuit-open"
    title = "Upstream circuit open"


class RetryBudgetExhausted(LLMError):
    slug = "retry-budget-exhausted"
    title = "The run's retry budget is spent"


class InvalidModelOutput(LLMError):
    slug = "invalid-model-output"
    title = "The model's structured output did not validate"


class ToolError(PodcrewError):
    """A tool call failed; the research loop reports it to the model instead of raising."""

    status = 502
    slug = "tool-error"
    title = "Tool call failed"


class BlockedURL(ToolError):
    status = 400
    slug = "blocked-url"
    title = "URL refused by the egress guard"


class BudgetExceeded(PodcrewError):
    status = 402
    slug = "budget-exceeded"
    title = "Budget exceeded"
