"""Calls between podcrew services: one pooled `httpx.AsyncClient` per process, a retry
policy stated as constants plus a pure predicate, and errors mapped to meaning."""

from __future__ import annotations

import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from podcrew_core.budget import BudgetExceeded, BudgetLimits
from podcrew_core.deadline import RUN_ID_HEADER, Deadline
from podcrew_core.errors import DeadlineExceeded, PodcrewError, UpstreamError, UpstreamTimeout
from podcrew_core.hop import hop_headers
from podcrew_core.metrics import HTTP_CLIENT_DURATION, HTTP_CLIENT_REQUESTS

T = TypeVar("T", bound=BaseModel)

MAX_ATTEMPTS = 3
RETRY_BASE_S = 0.1
RETRY_MAX_S = 2.0
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def should_retry(exc: BaseException) -> bool:
    """Retry what can succeed on a second try: refused connections and overload answers."""
    if isinstance(exc, _RetryableStatus):
        return True
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError)


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def create_http_client(
    max_connections: int = 200, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """The process's one client for internal calls; created in the lifespan, closed there."""
    return httpx.AsyncClient(
        headers=headers,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        timeout=httpx.Timeout(30.0, connect=2.0),
    )


def internal_headers(
    run_id: str,
    deadline: Deadline,
    retry_budget: int | None = None,
    limits: BudgetLimits | None = None,
) -> dict[str, str]:
    """Run id, remaining deadline, the retry budget this hop may spend, and spend limits."""
    return {RUN_ID_HEADER: run_id, **hop_headers(deadline, retry_budget, limits)}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text[:200]


def _upstream_error(target: str, response: httpx.Response) -> PodcrewError:
    """The error a hop answered with; budget and deadline errors keep their meaning, since
    they end the run for the same reason, whichever hop ran into them."""
    detail = _detail(response)
    try:
        kind = str(response.json().get("type", ""))
    except (ValueError, AttributeError):
        kind = ""
    if kind.endswith("/" + BudgetExceeded.slug):
        return BudgetExceeded(detail)
    if kind.endswith("/" + DeadlineExceeded.slug):
        return DeadlineExceeded(f"{target}: {detail}")
    return UpstreamError(f"{target} answered {response.status_code}: {detail}")


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: BaseModel,
    response_model: type[T],
    *,
    target: str,
    run_id: str,
    deadline: Deadline,
    retry_budget: int | None = None,
    limits: BudgetLimits | None = None,
) -> T:
    """POST `body`, retrying transient failures while the deadline allows, and parse the reply."""
    payload = body.model_dump_json().encode()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(MAX_ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=RETRY_BASE_S, max=RETRY_MAX_S),
        retry=retry_if_exception(should_retry),
        reraise=True,
    )
    started = time.perf_counter()
    outcome = "error"
    try:
        async for attempt in retrying:
            with attempt:
                if deadline.remaining() <= 0:
                    raise DeadlineExceeded(f"no time left to call {target}")
                response = await client.post(
                    url,
                    content=payload,
                    headers={
                        "content-type": "application/json",
                        **internal_headers(run_id, deadline, retry_budget, limits),
                    },
                    timeout=max(0.001, deadline.remaining()),
                )
                if response.status_code in RETRYABLE_STATUS:
                    raise _RetryableStatus(response)
        if response.status_code >= 400:
            outcome = f"http_{response.status_code // 100}xx"
            raise _upstream_error(target, response)
        try:
            parsed = response_model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(
                f"{target} sent a response that does not match its contract"
            ) from exc
        outcome = "ok"
        return parsed
    except _RetryableStatus as exc:
        outcome = f"http_{exc.response.status_code // 100}xx"
        raise UpstreamError(
            f"{target} answered {exc.response.status_code}: {_detail(exc.response)}"
        ) from exc
    except httpx.TimeoutException as exc:
        outcome = "timeout"
        raise UpstreamTimeout(f"{target} did not answer before the deadline") from exc
    except httpx.HTTPError as exc:
        outcome = "connection_error"
        raise UpstreamError(f"{target} unreachable: {exc.__class__.__name__}") from exc
    finally:
        HTTP_CLIENT_REQUESTS.labels(target, outcome).inc()
        HTTP_CLIENT_DURATION.labels(target).observe(time.perf_counter() - started)
