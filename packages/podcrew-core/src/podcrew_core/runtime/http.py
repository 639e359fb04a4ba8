"""Calls between podcrew services: one pooled `httpx.AsyncClient` per process, and
`post_json`, which carries the run's hop, retries by the one policy (`runtime.resilience`)
within the hop's retry budget, and raises the error the other service answered with, by
its meaning (`contracts.problem`).

A service may be one URL (a Kubernetes Service: kube-proxy picks a pod per connection) or
several replicas named one by one (`Replicas`): then each call starts at the next replica in
turn, a retry goes to another, and one that could not be reached is passed over for a while.

The client keeps httpx's API but sends over aiohttp's HTTP/1.1 stack: `runtime/transport.py`
says why and what it saves.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    Unreachable,
    answer_error,
    hop_retry_delay_s,
    retry_after_s,
    should_retry,
    unreachable,
)
from podcrew_core.runtime.tracing import instrument_http_client
from podcrew_core.runtime.transport import AiohttpUnderHttpx

T = TypeVar("T", bound=BaseModel)

# A connection that was refused or closed before any answer: the request never reached the
# service, so sending it again cannot do its work twice. Any other transport failure (a
# reset mid-answer) may come after the work was done, and is retried only for a call that
# may be done twice (`idempotent`).
RETRYABLE_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError)
# How long a replica that could not be reached is passed over while another may answer:
# about what a crashed process takes to be restarted.
REPLICA_REST_S = 5.0
_JITTER = random.Random()  # noqa: S311 - jitter, not security


@dataclass
class Replicas:
    """The URLs of one service's replicas, for calls any of them may serve.

    Each call starts at the next URL in turn and each retry moves on to the next, so a
    retry after a replica died lands on another; a URL that could not be reached is passed
    over for `rest_s` unless every one is, so calls go on trying the one most likely back.
    One URL (a Kubernetes Service) is simply tried every time.
    """

    urls: Sequence[str]
    rest_s: float = REPLICA_REST_S
    clock: Callable[[], float] = time.monotonic
    _turn: int = 0
    _resting_until: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("a service needs at least one URL")

    @classmethod
    def parse(cls, bases: str, path: str = "") -> Replicas:
        """Replicas from a comma-separated list of base URLs, `path` appended to each."""
        urls = [base.strip().rstrip("/") + path for base in bases.split(",") if base.strip()]
        return cls(urls)

    def pick(self) -> str:
        """The URL of the next attempt."""
        now = self.clock()
        count = len(self.urls)
        for step in range(count):
            url = self.urls[(self._turn + step) % count]
            if self._resting_until.get(url, 0.0) <= now:
                self._turn = (self._turn + step + 1) % count
                return url
        # Every one failed lately: try the one whose rest ends first.
        url = min(self.urls, key=lambda u: self._resting_until.get(u, 0.0))
        self._turn = (self.urls.index(url) + 1) % count
        return url

    def failed(self, url: str, error: PodcrewError) -> None:
        """An attempt at `url` ended with `error`: rest it if it could not be reached."""
        if unreachable(error):
            self._resting_until[url] = self.clock() + self.rest_s

    def answered(self, url: str) -> None:
        """`url` answered: it takes calls in turn again."""
        self._resting_until.pop(url, None)


def hop_retry_wait_s(error: PodcrewError, attempt: int, hop: Hop) -> float | None:
    """Seconds to wait before retrying a call to another podcrew service whose attempt
    number `attempt` (1-based) failed with `error`, the retry taken from `hop`'s budget; None
    when the policy, the attempts, the deadline or the budget allow no retry.

    Decided here rather than by tenacity: tenacity decides whether to stop before it computes
    the wait, so it cannot refuse a retry whose wait (the other service's `Retry-After`)
    would outlast the deadline, nor take a retry from the run's budget only once the retry is
    certain to happen."""
    advice = retry_after_s(error.headers.get("Retry-After"), time.time())
    delay = hop_retry_delay_s(attempt - 1, advice, _JITTER)
    if (
        not should_retry(error)
        or attempt >= HOP_MAX_ATTEMPTS
        or hop.deadline.remaining() <= delay
        or not hop.retries.try_spend()
    ):
        return None
    return delay


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


def transport_error(
    target: str, exc: httpx.HTTPError, *, idempotent: bool = False
) -> UpstreamError:
    """What a failed exchange with `target` means: out of time, or unreachable (retryable
    if the request cannot have reached it, or if the call may be done twice)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{target} did not answer before the deadline")
    return Unreachable(
        f"{target} unreachable: {exc.__class__.__name__}",
        retryable=idempotent or isinstance(exc, RETRYABLE_TRANSPORT_ERRORS),
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
    replicas: Replicas
    payload: bytes
    target: str
    hop: Hop
    idempotent: bool
    outcome: str = "error"

    async def attempt(self) -> httpx.Response:
        """One POST to the next replica; a success, or the error it ended with."""
        url = self.replicas.pick()
        try:
            response = await self._post(url)
        except PodcrewError as error:
            self.replicas.failed(url, error)
            raise
        self.replicas.answered(url)
        return response

    async def _post(self, url: str) -> httpx.Response:
        hop = self.hop
        if hop.deadline.remaining() <= 0:
            raise DeadlineExceeded(f"no time left to call {self.target}")
        sent = time.perf_counter()
        try:
            response = await self.client.post(
                url,
                content=self.payload,
                headers={"content-type": "application/json", **hop.to_headers()},
                timeout=max(0.001, hop.deadline.remaining()),
            )
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            self.outcome = "timeout" if timed_out else "connection_error"
            raise transport_error(self.target, exc, idempotent=self.idempotent) from exc
        observe_hop(self.target, response, time.perf_counter() - sent)
        if response.status_code < 400:
            return response
        self.outcome = f"http_{response.status_code // 100}xx"
        error = answer_error(response.status_code, response.content, response.headers)
        charge_reported(hop, error)
        raise error

    async def answer(self) -> httpx.Response:
        """Attempts until one succeeds, or until `hop_retry_wait_s` allows no other."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.attempt()
            except PodcrewError as error:
                delay = hop_retry_wait_s(error, attempt, self.hop)
                if delay is None:
                    raise
            await asyncio.sleep(delay)


async def post_json(
    client: httpx.AsyncClient,
    url: str | Replicas,
    body: BaseModel,
    response_model: type[T],
    *,
    target: str,
    hop: Hop,
    idempotent: bool = False,
) -> T:
    """POST `body` with the run's `hop` to `url` (or the next of its replicas), retrying
    what can succeed on retry within the hop's retry budget and deadline, and parse the
    answer; a failure is the error it means (the one the other service answered with,
    rebuilt from its problem body). `idempotent`: doing the call twice is harmless, so a
    connection lost mid-answer is retried too."""
    replicas = url if isinstance(url, Replicas) else Replicas((url,))
    call = _Call(client, replicas, body.model_dump_json().encode(), target, hop, idempotent)
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
