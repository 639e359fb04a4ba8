"""The shared rate limiter on a real redis-server: two limiters stand for two replicas of
the deployment, each with its own Redis client, calling one provider account."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import DeadlineExceeded, LLMRateLimited
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm import LLMRequest, LLMResponse, LLMSettings, Message, Stage, TextBlock
from podcrew_core.llm.ratelimit import RateLimitedProvider, RateLimiter, estimate_input_tokens
from podcrew_core.llm.ratelimit_headers import Bound, ProviderLimits, parse_limits
from podcrew_core.llm.types import StreamEnd, StreamEvent
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.scope import hop_context
from podcrew_core.runtime.settings import RedisSettings

MODEL = "claude-haiku-4-5"


class Scripted:
    """A provider that answers every call with `usage` and `limits`, or raises `error`."""

    name = "scripted"

    def __init__(self, output_tokens: int = 10, limits: ProviderLimits | None = None) -> None:
        self.calls = 0
        self.output_tokens = output_tokens
        self.limits = limits
        self.error: Exception | None = None

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return LLMResponse(
            model=request.model,
            content=[TextBlock(text="ok")],
            stop_reason="end_turn",
            usage=Usage(input_tokens=5, output_tokens=self.output_tokens, llm_calls=1),
            provider_limits=self.limits,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        yield StreamEnd(response=await self.complete(request))

    async def aclose(self) -> None:
        return None


def _settings(rpm: int = 600, itpm: int = 100_000, otpm: int = 100_000, **extra: Any) -> Any:
    limits = {
        "requests_per_minute": rpm,
        "input_tokens_per_minute": itpm,
        "output_tokens_per_minute": otpm,
    }
    return LLMSettings(
        ratelimit_enabled=True,
        ratelimits={MODEL: limits},
        ratelimit_burst_s=extra.pop("burst_s", 0.1),
        **extra,
    )


def _request(max_tokens: int = 100) -> LLMRequest:
    return LLMRequest(
        stage=Stage.RESEARCH,
        model=MODEL,
        system="You research.",
        messages=[Message(role="user", content="What is a generator?")],
        max_tokens=max_tokens,
    )


@contextmanager
def _run(deadline_s: float = 30.0, priority: str = "interactive") -> Iterator[None]:
    with hop_context(Hop("run-1", Deadline.after(deadline_s), RetryBudget(0), None, priority)):
        yield


@pytest.fixture
async def replicas(redis: Redis, redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two Redis clients, as two replicas of an agent have."""
    other = create_redis(RedisSettings(url=SecretStr(redis_url)))
    yield redis, other
    await other.aclose()


async def test_replicas_share_one_request_rate(replicas: tuple[Redis, Redis]) -> None:
    # 600 per minute is one each 0.1 s, whichever replica asks: 7 calls take 0.6 s at least.
    settings = _settings(rpm=600)
    providers = [RateLimitedProvider(Scripted(), RateLimiter(r, settings, "t")) for r in replicas]
    started = time.monotonic()
    for i in range(7):
        await providers[i % 2].complete(_request())
    assert time.monotonic() - started >= 0.55


async def test_a_call_that_cannot_get_capacity_in_time_fails_without_calling(
    redis: Redis,
) -> None:
    inner = Scripted()
    provider = RateLimitedProvider(inner, RateLimiter(redis, _settings(rpm=6), "t"))
    await provider.complete(_request())  # the one request the bucket holds; the next in 10 s
    with _run(deadline_s=1.0), pytest.raises(DeadlineExceeded) as caught:
        await provider.complete(_request())
    assert inner.calls == 1
    assert caught.value.slug == "deadline-exceeded"
    assert "rate limit" in caught.value.detail


async def test_a_429_pauses_every_replica_for_its_retry_after(
    replicas: tuple[Redis, Redis],
) -> None:
    settings = _settings(rpm=60_000, burst_s=1)
    first, second = Scripted(), Scripted()
    one = RateLimitedProvider(first, RateLimiter(replicas[0], settings, "t"))
    two = RateLimitedProvider(second, RateLimiter(replicas[1], settings, "t"))
    first.error = LLMRateLimited("429", upstream_status=429, retry_after_s=5.0)
    with pytest.raises(LLMRateLimited):
        await one.complete(_request())
    with _run(deadline_s=2.0), pytest.raises(DeadlineExceeded):
        await two.complete(_request())
    assert second.calls == 0


async def test_the_providers_remaining_lowers_the_shared_bucket(
    replicas: tuple[Redis, Redis],
) -> None:
    # The account has other clients: the provider says no request is left, though this
    # deployment's own count has plenty.
    told = ProviderLimits((Bound(limit=600, remaining=0), Bound(), Bound()))
    settings = _settings(rpm=600, burst_s=60)
    one = RateLimitedProvider(Scripted(limits=told), RateLimiter(replicas[0], settings, "t"))
    two = RateLimitedProvider(Scripted(), RateLimiter(replicas[1], settings, "t"))
    await one.complete(_request())
    started = time.monotonic()
    await two.complete(_request())
    assert time.monotonic() - started >= 0.05  # waited for a refill (0.1 s per request)


async def test_unused_output_is_given_back(redis: Redis) -> None:
    # The bucket holds 1000 output tokens; each call reserves 800 and uses 10.
    settings = _settings(otpm=1000, burst_s=60)
    provider = RateLimitedProvider(Scripted(output_tokens=10), RateLimiter(redis, settings, "t"))
    with _run(deadline_s=1.0):  # without the give-back the second call would wait ~48 s
        for _ in range(3):
            await provider.complete(_request(max_tokens=800))


async def test_a_stream_settles_with_its_usage(redis: Redis) -> None:
    settings = _settings(otpm=1000, burst_s=60)
    provider = RateLimitedProvider(Scripted(output_tokens=10), RateLimiter(redis, settings, "t"))
    with _run(deadline_s=1.0):
        for _ in range(3):
            events = [e async for e in provider.stream(_request(max_tokens=800))]
            assert isinstance(events[-1], StreamEnd)


async def test_interactive_calls_go_before_batch_calls(redis: Redis) -> None:
    # One request a second: the batch calls are still waiting for their turn when the
    # interactive ones ask, however slowly the machine starts the coroutines.
    settings = _settings(rpm=60)
    provider = RateLimitedProvider(Scripted(), RateLimiter(redis, settings, "t"))
    await provider.complete(_request())
    order: list[str] = []

    async def call(priority: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        with _run(priority=priority):
            await provider.complete(_request())
        order.append(priority)

    # The batch calls ask first, the interactive ones a moment later.
    await asyncio.gather(
        call("batch", 0.0), call("batch", 0.0), call("interactive", 0.1), call("interactive", 0.1)
    )
    assert order == ["interactive", "interactive", "batch", "batch"]


async def test_calls_sent_as_message_batches_take_no_capacity(redis: Redis) -> None:
    """Where batch runs' calls go through the Message Batches API (limited apart), they
    neither wait for nor take the shared rate; interactive calls still do."""
    settings = _settings(rpm=60)  # one request a second, the bucket holding 0.1 s of it
    provider = RateLimitedProvider(
        Scripted(), RateLimiter(redis, settings, "t"), batches_apart=True
    )
    with _run(deadline_s=0.5):
        await provider.complete(_request())
    with _run(deadline_s=0.5, priority="batch"):
        for _ in range(5):
            await provider.complete(_request())
            assert [e async for e in provider.stream(_request())]
    with _run(deadline_s=0.3), pytest.raises(DeadlineExceeded):
        await provider.complete(_request())


async def test_without_redis_calls_go_ahead() -> None:
    unreachable = Redis(host="127.0.0.1", port=1, retry=None)
    inner = Scripted()
    provider = RateLimitedProvider(inner, RateLimiter(unreachable, _settings(), "t"))
    try:
        await provider.complete(_request())
    finally:
        await unreachable.aclose()
    assert inner.calls == 1


def test_the_input_estimate_counts_the_whole_prompt() -> None:
    short, long = _request(), _request()
    long.messages.append(Message(role="user", content="x" * 4000))
    assert estimate_input_tokens(long) - estimate_input_tokens(short) == 1000


def test_rate_limit_headers_are_read() -> None:
    limits = parse_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:30Z",
            "anthropic-ratelimit-output-tokens-remaining": "7000",
        },
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert limits is not None
    assert limits.bounds[0] == Bound(limit=50, remaining=49, reset_s=30.0)
    assert limits.bounds[2].remaining == 7000
    assert parse_limits({"request-id": "req_1"}) is None
