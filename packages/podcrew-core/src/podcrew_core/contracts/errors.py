"""Errors by meaning: each class has its HTTP status, a stable slug (the problem `type`)
and whether repeating the same call can succeed (`retryable`).

Code raises the class that says what went wrong (`RunNotFound`, `UpstreamTimeout`, ...);
`podcrew_core.contracts.problem` writes each as an `application/problem+json` body and, on
the calling side of a hop, rebuilds the same class from its slug, so an error keeps its
meaning (and its retryability) from one process to the next. Every class with a slug of its
own is registered under it when it is defined, wherever it lives, and must be constructible
from its detail alone (the codec rebuilds it so). Nothing here imports a web framework, so
every process (the operator included) can share these types.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://podcrew.dev/problems/"

_BY_SLUG: dict[str, type[PodcrewError]] = {}


class PodcrewError(Exception):
    """Base of every error podcrew raises on purpose.

    `status`, `slug`, `title` and `retryable` are stated by each class; an instance may say
    otherwise about `retryable` when one case of a class cannot pass (a connection reset
    after the request was sent) or when the service that raised it said so.
    """

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    # An unexpected failure may be a passing one (as 5xx in HTTP): the caller may try again.
    retryable: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        slug = cls.__dict__.get("slug")
        if slug is None:  # a variant of its parent: the parent's slug names it on the wire
            return
        known = _BY_SLUG.get(slug)
        # The same class defined again (its module reloaded) takes its own place back.
        if known is not None and _name(known) != _name(cls):
            raise TypeError(f"problem slug {slug!r} is taken by {_name(known)}")
        _BY_SLUG[slug] = cls

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        if retryable is not None:
            self.retryable = retryable

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_class(slug: str) -> type[PodcrewError] | None:
    """The class registered under `slug`, if this process has defined one."""
    return _BY_SLUG.get(slug)


_BY_SLUG[PodcrewError.slug] = PodcrewError


class BadRequest(PodcrewError):
    status = 400
    slug = "bad-request"
    title = "Bad request"
    retryable = False


class MalformedJSON(BadRequest):
    slug = "malformed-json"
    title = "Request body is not valid JSON"


class Unauthorized(PodcrewError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid credentials"
    retryable = False


class NotFound(PodcrewError):
    status = 404
    slug = "not-found"
    title = "Not found"
    retryable = False


class RunNotFound(NotFound):
    slug = "run-not-found"
    title = "Run not found"


class MethodNotAllowed(PodcrewError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"
    retryable = False


class Conflict(PodcrewError):
    status = 409
    slug = "conflict"
    title = "Conflict"
    retryable = False


class FeedbackExists(Conflict):
    slug = "feedback-exists"
    title = "This user already gave other feedback on this run"


class RunNotFinished(Conflict):
    slug = "run-not-finished"
    title = "The run has no final report yet"


class PayloadTooLarge(PodcrewError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"
    retryable = False


class UnsupportedMediaType(PodcrewError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    retryable = False


class ValidationFailed(PodcrewError):
    status = 422
    slug = "validation-failed"
    title = "Request failed validation"
    retryable = False


class RateLimited(PodcrewError):
    """The tenant is over its rate or its concurrent runs: the same call succeeds once the
    `Retry-After` it names has passed."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"
    retryable = True


class Overloaded(PodcrewError):
    """No slot freed up in time: another replica, or the same one a moment later, may serve."""

    status = 503
    slug = "overloaded"
    title = "Service overloaded"
    retryable = True


class StateStoreUnavailable(PodcrewError):
    status = 503
    slug = "state-store-unavailable"
    title = "State store unavailable"
    retryable = True


class NotReplicated(StateStoreUnavailable):
    """The run was written to the primary but not to `PODCREW_REDIS_MIN_REPLICAS` replicas in
    time: not accepted. It may still execute; retry with the same Idempotency-Key."""

    slug = "not-replicated"
    title = "Not replicated in time"


class NotReady(PodcrewError):
    status = 503
    slug = "not-ready"
    title = "Service not ready"
    retryable = True


class DeadlineExceeded(PodcrewError):
    """The run's time is spent: no later attempt can finish before it either."""

    status = 504
    slug = "deadline-exceeded"
    title = "Deadline exceeded"
    retryable = False


class UpstreamError(PodcrewError):
    """A service podcrew depends on (an agent, the LLM, Redis) failed."""

    status = 502
    slug = "upstream-error"
    title = "Upstream service failed"
    retryable = True


class UpstreamTimeout(UpstreamError):
    """No answer before the deadline: podcrew's calls wait as long as the run has left."""

    status = 504
    slug = "upstream-timeout"
    title = "Upstream service timed out"
    retryable = False


class LLMError(UpstreamError):
    """An LLM call failed. `retryable` says whether the same call may succeed if repeated;
    `retry_after_s` is the upstream's own advice (the `retry-after` header), if any."""

    slug = "llm-error"
    title = "LLM call failed"
    retryable = False

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
    retryable = False


class CircuitOpen(LLMError):
    status = 503
    slug = "circuit-open"
    title = "Upstream circuit open"
    retryable = False


class RetryBudgetExhausted(LLMError):
    slug = "retry-budget-exhausted"
    title = "The run's retry budget is spent"
    retryable = False


class InvalidModelOutput(LLMError):
    slug = "invalid-model-output"
    title = "The model's structured output did not validate"
    retryable = False


class ToolError(PodcrewError):
    """A tool call failed; the research loop reports it to the model instead of raising."""

    status = 502
    slug = "tool-error"
    title = "Tool call failed"
    retryable = False


class BlockedURL(ToolError):
    status = 400
    slug = "blocked-url"
    title = "URL refused by the egress guard"


class BudgetExceeded(PodcrewError):
    status = 402
    slug = "budget-exceeded"
    title = "Budget exceeded"
    retryable = False


class UnknownProblem(UpstreamError):
    """An answer whose problem `type` this process does not know: a newer service's error,
    or a page from something in between (a proxy). It keeps the status, the slug and the
    retryability the answer gave."""

    def __init__(
        self, detail: str, *, status: int, slug: str, title: str, retryable: bool, **extra: Any
    ) -> None:
        super().__init__(detail, retryable=retryable, **extra)
        self.status = status
        self.slug = slug
        self.title = title
