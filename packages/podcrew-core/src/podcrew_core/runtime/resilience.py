"""Failure handling for calls to an upstream that can fail: the one retry policy (constants
and pure functions) and a circuit breaker.

The policy, for every retry podcrew makes (LLM calls, calls between its services, webhooks,
the operator's calls to the API): an error says itself whether the same call can succeed if
repeated (`PodcrewError.retryable`, kept across hops by the problem codec); an answer that
says nothing is judged by its status (408, 429, 5xx); a retry waits the upstream's
`Retry-After` or a jittered exponential backoff; and a run's retries come out of its retry
budget (`Hop.retries`), so they stay within it however they are spread.

Why the breaker is hand-written: pybreaker serialises every call through one RLock, and
aiobreaker is unmaintained; neither has a failure-rate window or a bounded number of
half-open probes. This one holds no lock while the protected call runs (asyncio runs its
bookkeeping between awaits, so none is needed).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from prometheus_client import Counter, Gauge

from podcrew_core.contracts.errors import (
    CircuitOpen,
    NotReady,
    PodcrewError,
    UnknownProblem,
    UpstreamError,
)
from podcrew_core.contracts.problem import from_problem

# --- retry policy -----------------------------------------------------------------------

# Answers that say nothing of their own: these statuses can change on a second try.
RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx
# LLM calls: the Anthropic SDK's own schedule.
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0  # upstream advice beyond this is treated as "give up"
# Calls between podcrew's services: the agent behind a call is one of several replicas, so a
# short wait is enough; three attempts at most.
HOP_MAX_ATTEMPTS = 3
HOP_RETRY_BASE_S = 0.1
HOP_RETRY_MAX_S = 2.0

LLM_RETRIES = Counter(
    "podcrew_llm_retries",
    "LLM calls retried, by the reason of the failed attempt (HTTP status or error kind).",
    ["reason"],
)
BREAKER_STATE = Gauge(
    "podcrew_circuit_breaker_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
    multiprocess_mode="livemax",  # several workers: the worst breaker shows
)
BREAKER_OPENED = Counter(
    "podcrew_circuit_breaker_opened",
    "Times a circuit breaker opened, per upstream.",
    ["upstream"],
)


def should_retry(error: BaseException) -> bool:
    """Retry only what says it can succeed when repeated: a podcrew error that is
    `retryable` (an LLM's 429, 529, 5xx, timeouts and lost connections; an agent that is
    overloaded or unreachable). Anything else, a bug included, is not retried."""
    return isinstance(error, PodcrewError) and error.retryable


class Unreachable(UpstreamError):
    """The service was not reached: the connection was refused, or lost before an answer
    came. Another replica, or the same one once restarted, may answer. (`upstream-error` on
    the wire: a variant, not a slug of its own.)"""


# What a proxy in front of a service answers when no replica behind it takes the request.
_PROXY_UNREACHABLE_STATUS = frozenset({502, 503})


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the service itself could not be reached, rather than that it
    answered with a failure: a refused or lost connection (`Unreachable`), a service that is
    shutting down (`NotReady`), or a proxy's 502/503 page (an answer that is no podcrew
    problem). An agent's own 502 (its LLM failed) is an answer, not this."""
    if isinstance(error, Unreachable | NotReady):
        return True
    return (
        isinstance(error, UnknownProblem)
        and error.slug == UpstreamError.slug
        and error.status in _PROXY_UNREACHABLE_STATUS
    )


def should_retry_status(status: int) -> bool:
    """Whether an answer that says nothing else can change on a second try: 408, 429, 5xx."""
    return status in RETRYABLE_STATUS or 500 <= status <= 599


def answer_error(
    status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None
) -> PodcrewError:
    """The error an answer of another podcrew service stands for: the one its problem body
    names (`from_problem`), retryable as the body says, else as its status says."""
    return from_problem(status, body, headers=headers, retryable=should_retry_status(status))


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_s(
    attempt: int,
    retry_after: float | None,
    *,
    base_s: float,
    max_s: float,
    rng: random.Random,
) -> float:
    """Seconds to wait before retry number `attempt` (0-based): the upstream's `Retry-After`
    when it gave one, else exponential backoff with full jitter capped at `max_s`, so a crowd
    of clients that failed together does not retry together."""
    if retry_after is not None:
        return max(0.0, retry_after)
    return rng.uniform(0.0, min(max_s, base_s * 2**attempt))


def retry_delay_s(attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Seconds to wait before LLM retry number `attempt` (0-based)."""
    return backoff_s(
        attempt, retry_after_s, base_s=INITIAL_RETRY_DELAY_S, max_s=MAX_RETRY_DELAY_S, rng=rng
    )


def hop_retry_delay_s(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based) of a call to another podcrew
    service."""
    return backoff_s(attempt, retry_after, base_s=HOP_RETRY_BASE_S, max_s=HOP_RETRY_MAX_S, rng=rng)


# --- circuit breaker ---------------------------------------------------------------------


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    """Opens after `consecutive_failures` in a row, or when at least `min_calls` calls in the
    last `window_s` failed at `failure_rate` or more; stays open `open_s`, then lets at most
    `half_open_probes` calls through; one success closes it, one failure re-opens it."""

    upstream: str
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_calls: int = 10
    window_s: float = 30.0
    open_s: float = 15.0
    half_open_probes: int = 1
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    _streak: int = 0
    _calls: deque[tuple[float, bool]] = field(default_factory=deque)
    _failures: int = 0  # failures in `_calls`, kept as it changes: no pass over the window
    _opened_at: float = 0.0
    _probes: int = 0

    def __post_init__(self) -> None:
        BREAKER_STATE.labels(self.upstream).set(self.state)
        BREAKER_OPENED.labels(self.upstream)  # exported at 0 until it first opens

    def _set(self, state: BreakerState) -> None:
        if state is BreakerState.OPEN and self.state is not BreakerState.OPEN:
            BREAKER_OPENED.labels(self.upstream).inc()
            self._opened_at = self.clock()
        if state is BreakerState.HALF_OPEN:
            self._probes = 0
        if state is BreakerState.CLOSED:
            self._streak = 0
            self._calls.clear()
            self._failures = 0
        self.state = state
        BREAKER_STATE.labels(self.upstream).set(state)

    def before_call(self) -> None:
        """Admit a call or fail fast with `CircuitOpen`."""
        if self.state is BreakerState.OPEN:
            if self.clock() - self._opened_at < self.open_s:
                raise self._open_error()
            self._set(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes >= self.half_open_probes:
                raise self._open_error()
            self._probes += 1

    def _open_error(self) -> CircuitOpen:
        wait = max(0.0, self.open_s - (self.clock() - self._opened_at))
        return CircuitOpen(
            f"{self.upstream} failed repeatedly; calls fail fast for another {wait:.1f}s",
            retry_after_s=wait,
            headers={"Retry-After": str(max(1, round(wait)))},
        )

    def record(self, ok: bool) -> None:
        """The outcome of an admitted call."""
        if self.state is BreakerState.HALF_OPEN:
            self._set(BreakerState.CLOSED if ok else BreakerState.OPEN)
            return
        now = self.clock()
        calls = self._calls
        calls.append((now, ok))
        if not ok:
            self._failures += 1
        while calls and now - calls[0][0] > self.window_s:
            if not calls.popleft()[1]:
                self._failures -= 1
        self._streak = 0 if ok else self._streak + 1
        if self._streak >= self.consecutive_failures or (
            len(calls) >= self.min_calls and self._failures / len(calls) >= self.failure_rate
        ):
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """An admitted call ended without an outcome (cancelled): free its probe slot."""
        if self.state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1
