"""Retry policy, retry budget, circuit breaker and the resilient provider (unit level)."""

from __future__ import annotations

import asyncio
import random

import pytest

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import (
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    InvalidModelOutput,
    LLMError,
    LLMOverloaded,
    LLMRateLimited,
    LLMRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    Overloaded,
    PodcrewError,
    RetryBudgetExhausted,
    UpstreamError,
)
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm import LLMRequest, LLMResponse, Message, Stage, TextBlock
from podcrew_core.llm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from podcrew_core.llm.resilient import ResilientProvider
from podcrew_core.llm.types import StreamEnd, TextDelta
from podcrew_core.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    retry_delay_s,
    should_retry,
    should_retry_status,
)
from podcrew_core.runtime.scope import hop_context

REQUEST = LLMRequest(
    stage=Stage.PLAN, model="m", system="s", messages=[Message(role="user", content="hi")]
)
OK = LLMResponse(
    model="m", content=[TextBlock(text="ok")], stop_reason="end_turn", usage=Usage(llm_calls=1)
)


class Scripted:
    """Fails with the given errors in order, then answers."""

    name = "scripted"

    def __init__(self, *errors: LLMError, delay_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.delay_s = delay_s

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.errors:
            raise self.errors.pop(0)
        return OK

    async def stream(self, request: LLMRequest):  # type: ignore[no-untyped-def]
        self.calls += 1
        yield TextDelta(text="a")
        if self.errors:
            raise self.errors.pop(0)
        yield StreamEnd(response=OK)

    async def aclose(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _provider(inner: Scripted, attempts: int = 3, **breaker: object) -> ResilientProvider:
    return ResilientProvider(
        inner,
        CircuitBreaker(upstream="test", **breaker),
        attempts,
        rng=random.Random(1),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (LLMRateLimited("x", upstream_status=429), True),
        (LLMOverloaded("x", upstream_status=529), True),
        (LLMServerError("x", upstream_status=500), True),
        (LLMUnavailable("x"), True),
        (LLMTimeout("x"), True),
        (LLMRejected("x", upstream_status=400), False),
        (LLMRejected("x", upstream_status=422), False),
        (LLMError("stream error event"), False),
        (InvalidModelOutput("x"), False),
        (Overloaded("x"), True),
        (UpstreamError("unreachable"), True),
        (UpstreamError("reset after the request was sent", retryable=False), False),
        (DeadlineExceeded("x"), False),
        (BudgetExceeded("x"), False),
        (BadRequest("x"), False),
        (PodcrewError("unexpected"), True),
        (ValueError("bug"), False),
    ],
)
def test_only_what_can_succeed_is_retried(error: BaseException, retry: bool) -> None:
    assert should_retry(error) is retry


def test_an_answer_that_says_nothing_is_judged_by_its_status() -> None:
    assert all(should_retry_status(s) for s in (408, 429, 500, 502, 503, 504, 529))
    assert not any(should_retry_status(s) for s in (400, 401, 403, 404, 409, 413, 422))


def _hop(retries: int = 10, deadline_s: float = 30.0) -> Hop:
    return Hop("run-1", Deadline.after(deadline_s), RetryBudget(retries))


def test_delay_honours_retry_after_else_jittered_exponential() -> None:
    rng = random.Random(7)
    assert retry_delay_s(0, 2.5, rng) == 2.5
    delays = [retry_delay_s(attempt, None, rng) for attempt in range(6) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 100  # jittered, not lock-step
    assert max(retry_delay_s(0, None, rng) for _ in range(50)) <= 0.5


async def test_transient_failures_are_retried_then_succeed() -> None:
    inner = Scripted(
        LLMRateLimited("x", upstream_status=429, retry_after_s=0.01),
        LLMServerError("x", upstream_status=503, retry_after_s=0.01),
    )
    assert await _provider(inner).complete(REQUEST) == OK
    assert inner.calls == 3


async def test_rejected_requests_are_never_retried() -> None:
    inner = Scripted(LLMRejected("bad", upstream_status=400))
    with pytest.raises(LLMRejected):
        await _provider(inner).complete(REQUEST)
    assert inner.calls == 1


async def test_attempts_are_bounded() -> None:
    inner = Scripted(*[LLMOverloaded("x", upstream_status=529, retry_after_s=0.0)] * 10)
    with pytest.raises(LLMOverloaded):
        await _provider(inner, attempts=3).complete(REQUEST)
    assert inner.calls == 3


async def test_retry_budget_caps_retries_across_calls() -> None:
    inner = Scripted(*[LLMServerError("x", upstream_status=500, retry_after_s=0.0)] * 20)
    provider = _provider(inner, attempts=5, consecutive_failures=100, min_calls=100)
    hop = _hop(retries=3)
    budget = hop.retries
    with hop_context(hop):
        for _ in range(3):
            with pytest.raises(LLMError):
                await provider.complete(REQUEST)
    # 3 calls; 3 retries in all: the budget, not attempts times calls, bounds the load.
    assert inner.calls == 3 + 3
    assert budget.remaining == 0 and budget.spent == 3


async def test_budget_exhaustion_is_a_clear_error() -> None:
    inner = Scripted(LLMServerError("x", upstream_status=500, retry_after_s=0.0))
    with hop_context(_hop(retries=0)), pytest.raises(RetryBudgetExhausted):
        await _provider(inner).complete(REQUEST)


async def test_no_retry_when_the_deadline_cannot_cover_the_wait() -> None:
    inner = Scripted(LLMRateLimited("x", upstream_status=429, retry_after_s=5.0))
    with hop_context(_hop(deadline_s=1.0)), pytest.raises(LLMRateLimited):
        await _provider(inner).complete(REQUEST)
    assert inner.calls == 1


async def test_stream_is_not_retried_after_text_was_seen() -> None:
    inner = Scripted(LLMUnavailable("dropped"))
    with pytest.raises(LLMUnavailable):
        async for _ in _provider(inner).stream(REQUEST):
            pass
    assert inner.calls == 1


def test_breaker_opens_on_consecutive_failures_and_probes_after_open_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(upstream="t", consecutive_failures=3, open_s=10, clock=clock)
    for _ in range(3):
        breaker.before_call()
        breaker.record(ok=False)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as raised:
        breaker.before_call()
    assert raised.value.headers["Retry-After"] == "10"
    clock.now += 10
    breaker.before_call()  # the one half-open probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller is refused while the probe runs
    breaker.record(ok=True)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_opens_on_failure_rate_without_a_streak() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        upstream="t",
        consecutive_failures=100,
        failure_rate=0.5,
        min_calls=10,
        window_s=30,
        clock=clock,
    )
    for i in range(10):
        breaker.before_call()
        breaker.record(ok=i % 2 == 0)  # alternate: never two failures in a row
    assert breaker.state is BreakerState.OPEN


def test_failed_probe_reopens_and_old_failures_age_out() -> None:
    clock = Clock()
    breaker = CircuitBreaker(upstream="t", consecutive_failures=2, open_s=5, clock=clock)
    breaker.record(ok=False)
    breaker.record(ok=False)
    clock.now += 5
    breaker.before_call()
    breaker.record(ok=False)
    assert breaker.state is BreakerState.OPEN
    rate = CircuitBreaker(
        upstream="r", consecutive_failures=100, min_calls=4, window_s=10, clock=clock
    )
    for _ in range(3):
        rate.record(ok=False)
        rate.record(ok=True)
        clock.now += 11  # each pair falls out of the window before the next
    assert rate.state is BreakerState.CLOSED


def test_failure_rate_counts_only_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        upstream="w",
        consecutive_failures=100,
        failure_rate=0.5,
        min_calls=3,
        window_s=10,
        clock=clock,
    )
    breaker.record(ok=False)
    breaker.record(ok=False)
    clock.now += 11  # both failures age out
    for _ in range(3):
        breaker.record(ok=True)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(3):
        breaker.record(ok=False)  # 3 of the 6 calls in the window
    assert breaker.state is BreakerState.OPEN


async def test_breaker_holds_no_lock_while_calls_run() -> None:
    inner = Scripted(delay_s=0.2)
    provider = _provider(inner)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(provider.complete(REQUEST) for _ in range(10)))
    elapsed = asyncio.get_running_loop().time() - started
    assert inner.calls == 10
    assert elapsed < 1.0  # serialised calls would take 2 s


async def test_open_breaker_fails_fast_without_calling_upstream() -> None:
    inner = Scripted(*[LLMServerError("x", upstream_status=500, retry_after_s=0.0)] * 5)
    provider = _provider(inner, attempts=1, consecutive_failures=2)
    for _ in range(2):
        with pytest.raises(LLMServerError):
            await provider.complete(REQUEST)
    with pytest.raises(CircuitOpen):
        await provider.complete(REQUEST)
    assert inner.calls == 2


def test_prices_by_model_family_and_fallback() -> None:
    table = PriceTable(DEFAULT_PRICES, fallback=ModelPrice(input=100, output=100))
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
    )
    assert table.cost("claude-haiku-4-5-20251001", usage) == pytest.approx(1 + 5 + 0.1 + 1.25)
    assert table.cost("mystery-model", Usage(input_tokens=1_000_000)) == 100
