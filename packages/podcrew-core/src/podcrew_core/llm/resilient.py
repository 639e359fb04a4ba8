"""Retries and the circuit breaker around any provider.

Each attempt goes through the breaker; a failed attempt is retried only when the error can
succeed on retry (`resilience.should_retry`), another attempt is allowed, the retry budget of
the hop being served (`current_hop()`) has a retry left, and its deadline leaves time to wait
and call again. A stream
is retried only before its first delta: after that, the caller has seen text and a retry
would duplicate it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import structlog

from podcrew_core.contracts.errors import LLMError, RetryBudgetExhausted
from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEvent
from podcrew_core.runtime.resilience import (
    LLM_RETRIES,
    MAX_RETRY_AFTER_S,
    CircuitBreaker,
    retry_delay_s,
    should_retry,
)
from podcrew_core.runtime.scope import current_hop

_MIN_CALL_S = 0.05

log = structlog.get_logger(__name__)


class ResilientProvider:
    def __init__(
        self,
        inner: LLMProvider,
        breaker: CircuitBreaker,
        max_attempts: int,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.breaker = breaker
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    async def _before_retry(self, error: LLMError, attempt: int) -> None:
        """Wait before retry `attempt`, or re-raise `error` when no retry is allowed."""
        if not should_retry(error) or attempt >= self.max_attempts:
            raise error
        delay = retry_delay_s(attempt - 1, error.retry_after_s, self._rng)
        if delay > MAX_RETRY_AFTER_S:
            raise error
        hop = current_hop()
        if hop is not None:
            if hop.deadline.remaining() < delay + _MIN_CALL_S:
                raise error
            if not hop.retries.try_spend():
                raise RetryBudgetExhausted(
                    f"the run's retry budget is spent; last failure: {error.detail}",
                    upstream_status=error.upstream_status,
                ) from error
        LLM_RETRIES.labels(error.reason).inc()
        log.info("llm_retry", reason=error.reason, attempt=attempt, delay_s=round(delay, 3))
        await asyncio.sleep(delay)

    @contextmanager
    def _through_breaker(self) -> Iterator[None]:
        """One attempt as the breaker counts it: a failure a retry could mend counts against
        the upstream, one that is the request's own fault counts as the upstream answering,
        and no answer at all (cancelled, closed) gives the slot back uncounted."""
        self.breaker.before_call()
        try:
            yield
        except LLMError as error:
            self.breaker.record(ok=not error.retryable)
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record(ok=True)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._through_breaker():
                    return await self.inner.complete(request)
            except LLMError as error:
                await self._before_retry(error, attempt)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                with self._through_breaker():
                    async for event in self.inner.stream(request):
                        started = True
                        yield event
                return
            except LLMError as error:
                if started:
                    raise
                await self._before_retry(error, attempt)

    async def aclose(self) -> None:
        await self.inner.aclose()
