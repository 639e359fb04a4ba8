"""What the client raises, by meaning.

Every problem the API answers is rebuilt as podcrew's own class for its `type` slug
(`RunNotFound`, `RateLimited`, `Unauthorized`, `ValidationFailed` ...) by the same codec the
services use between themselves, so `except RunNotFound` works on the caller's side as it does
on the server's; a slug this version does not know is an `UnknownProblem` that keeps the
status. A call that gets no answer at all raises `APIConnectionError` (or `APITimeoutError`).
"""

from __future__ import annotations

import httpx

from podcrew_core.contracts.errors import PodcrewError, UpstreamError
from podcrew_core.contracts.problem import from_problem

# Answers that say nothing of their own are judged by their status: these may pass on a
# second try (every 5xx too).
RETRYABLE_STATUS = frozenset({408, 429})


class APIConnectionError(UpstreamError):
    """podcrew could not be reached, or the connection was lost before its answer came.
    (A variant of `upstream-error`: it never crosses the wire, so it has no slug of its own.)"""

    title = "podcrew could not be reached"
    retryable = True


class APITimeoutError(APIConnectionError):
    """podcrew did not answer within the client's timeout."""

    title = "podcrew did not answer in time"


class StreamEnded(APIConnectionError):
    """A run's event stream ended before the run's final event, and the server said that
    reconnecting would not help (or the client ran out of reconnects)."""

    title = "The run's event stream ended early"
    retryable = False


def error_from_response(response: httpx.Response) -> PodcrewError:
    """The error an API answer of status 4xx/5xx stands for (its body must be read)."""
    status = response.status_code
    return from_problem(
        status,
        response.content,
        headers=response.headers,
        retryable=status in RETRYABLE_STATUS or status >= 500,
    )


def error_from_transport(exc: httpx.TransportError, url: str) -> APIConnectionError:
    """A failure to reach podcrew at `url`, said in one line."""
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no answer from podcrew at {url} in time ({type(exc).__name__})")
    reason = str(exc) or type(exc).__name__
    return APIConnectionError(f"cannot reach podcrew at {url}: {reason}")
