"""Calls between podcrew services: one pooled `httpx.AsyncClient` per process, and
`post_json`, which carries the run's hop, retries by the one policy (`runtime.resilience`)
within the hop's retry budget, and raises the error the other service answered with, by
its meaning (`contracts.problem`).

The client keeps httpx's API but sends over aiohttp's HTTP/1.1 stack: `runtime/transport.py`
says why and what it saves.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from podcrew_core.contracts.errors import (
    DeadlineExceeded,
    PodcrewError,
    UpstreamError,
    UpstreamTimeout,
)
from podcrew_core.contracts.hop import Hop
from podcrew_core.runtime.metrics import (
    HTTP_CLIENT_DURATION,
    HTTP_CLIENT_HOP_OVERHEAD,
    HTTP_CLIENT_REQUESTS,
)
from podcrew_core.runtime.resilience import (
    HOP_MAX_ATTEMPTS,
    answer_error,
    hop_retry_delay_s,
    retry_after_s,
    should_retry,
)
from podcrew_core.runtime.tracing import instrument_http_client
from podcrew_core.runtime.transport import AiohttpUnderHttpx

T = TypeVar("T", bound=BaseModel)

# A connection that was refused or closed before any answer: the request never reached the
# service, so sending it again cannot do its work twice. Any other transport failure (a
# reset mid-answer) may come after the work was done, and is not retried.
RETRYABLE_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError)
_JITTER = random.Random()  # noqa: S311 - jitter, not security


def create_http_client(
    max_connections: int = 200, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """The process's one client for internal calls; created in the lifespan, closed there.

    At most `max_connections` connections, idle ones kept for 5 s (httpx's default); 30 s per
    read and 2 s to connect unless a call passes its own timeout (calls pass the run's
    remaining deadline). Traced like any httpx client when tracing is on.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    client = httpx.AsyncClient(
        headers=headers,
        limits=limits,
        timeout=httpx.Timeout(30.0, connect=2.0),
        transport=AiohttpUnderHttpx(limits=limits),
    )
    instrument_http_client(client)
    return client


def server_time_s(response: httpx.Response) -> float | None:
    """The `app` duration of a `Server-Timing` header (podcrew's services send one), in s."""
    for metric in response.headers.get("server-timing", "").split(","):
        name, _, params = metric.strip().partition(";")
        if name != "app":
            continue
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                try:
                    return float(value) / 1000
                except ValueError:
                    return None
    return None


def observe_hop(target: str, response: httpx.Response, elapsed_s: float) -> None:
    """Record what the hop added to a request whose whole answer took `elapsed_s`."""
    server_s = server_time_s(response)
    if server_s is not None:
        HTTP_CLIENT_HOP_OVERHEAD.labels(target).observe(max(0.0, elapsed_s - server_s))


def transport_error(target: str, exc: httpx.HTTPError) -> UpstreamError:
    """What a failed exchange with `target` means: out of time, or unreachable (retryable
    only if the request cannot have reached it)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{target} did not answer before the deadline")
    return UpstreamError(
        f"{target} unreachable: {exc.__class__.__name__}",
        retryable=isinstance(exc, RETRYABLE_TRANSPORT_ERRORS),
    )


def charge_reported(hop: Hop, error: PodcrewError) -> None:
    """Charge `hop` with the retries a failed answer says the other service spent on it
    (`retries` in its problem, see `runtime.scope`)."""
    retries = error.extra.get("retries")
    if isinstance(retries, int):
        hop.retries.charge(retries)


@dataclass
class _Call:
    """One `post_json` call to `target`: what it sends, and how its last attempt ended (the
    `outcome` label of its metric)."""

    client: httpx.AsyncClient
    url: str
    payload: bytes
    target: str
    hop: Hop
    outcome: str = "error"

    async def attempt(self) -> httpx.Response:
        """One POST; a success, or the error the exchange or the answer means."""
        hop = self.hop
        if hop.deadline.remaining() <= 0:
            raise DeadlineExceeded(f"no time left to call {self.target}")
        sent = time.perf_counter()
        try:
            response = await self.client.post(
                self.url,
                content=self.payload,
                headers={"content-type": "application/json", **hop.to_headers()},
                timeout=max(0.001, hop.deadline.remaining()),
            )
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            self.outcome = "timeout" if timed_out else "connection_error"
            raise transport_error(self.target, exc) from exc
        observe_hop(self.target, response, time.perf_counter() - sent)
        if response.status_code < 400:
            return response
        self.outcome = f"http_{response.status_code // 100}xx"
        error = answer_error(response.status_code, response.content, response.headers)
        charge_reported(hop, error)
        raise error

    async def answer(self) -> httpx.Response:
        """Attempts until one succeeds, or until the policy, the attempts, the deadline or
        the hop's retry budget allow no other; each retry is taken from the budget.

        A loop rather than tenacity: tenacity decides whether to stop before it computes the
        wait, so it cannot refuse a retry whose wait (the other service's `Retry-After`)
        would outlast the deadline, nor take a retry from the run's budget only once the
        retry is certain to happen."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.attempt()
            except PodcrewError as error:
                advice = retry_after_s(error.headers.get("Retry-After"), time.time())
                delay = hop_retry_delay_s(attempt - 1, advice, _JITTER)
                if (
                    not should_retry(error)
                    or attempt >= HOP_MAX_ATTEMPTS
                    or self.hop.deadline.remaining() <= delay
                    or not self.hop.retries.try_spend()
                ):
                    raise
            await asyncio.sleep(delay)


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: BaseModel,
    response_model: type[T],
    *,
    target: str,
    hop: Hop,
) -> T:
    """POST `body` with the run's `hop`, retrying what can succeed on retry within the hop's
    retry budget and deadline, and parse the answer; a failure is the error it means (the
    one the other service answered with, rebuilt from its problem body)."""
    call = _Call(client, url, body.model_dump_json().encode(), target, hop)
    started = time.perf_counter()
    try:
        response = await call.answer()
        try:
            parsed = response_model.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(
                f"{target} sent a response that does not match its contract", retryable=False
            ) from exc
        call.outcome = "ok"
        return parsed
    finally:
        HTTP_CLIENT_REQUESTS.labels(target, call.outcome).inc()
        HTTP_CLIENT_DURATION.labels(target).observe(time.perf_counter() - started)
