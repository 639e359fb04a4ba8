"""Metrics for every LLM call, whatever the provider: wraps one and records each call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog

from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.pricing import PriceTable
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEnd, StreamEvent
from podcrew_core.metrics import LLM_COST, LLM_DURATION, LLM_REQUESTS, LLM_TOKENS

log = structlog.get_logger(__name__)


class MeteredProvider:
    """Prices every call and records it: calls, outcomes, latency, tokens and cost by model
    and stage, and one `llm_call` log line per call."""

    def __init__(self, inner: LLMProvider, prices: PriceTable) -> None:
        self.inner = inner
        self.name = inner.name
        self.prices = prices

    def _priced(self, response: LLMResponse) -> LLMResponse:
        cost = self.prices.cost(response.model, response.usage)
        return response.model_copy(
            update={"usage": response.usage.model_copy(update={"cost_usd": cost})}
        )

    def _done(
        self,
        request: LLMRequest,
        started: float,
        response: LLMResponse | None,
        cancelled: bool = False,
    ) -> None:
        model = response.model if response else request.model
        stage = request.stage.value
        outcome = "ok" if response else "cancelled" if cancelled else "error"
        LLM_REQUESTS.labels(self.name, model, stage, outcome).inc()
        LLM_DURATION.labels(self.name, model, stage).observe(time.perf_counter() - started)
        if response is None:
            return
        usage = response.usage
        LLM_COST.labels(model, stage).inc(usage.cost_usd)
        log.info(
            "llm_call",
            provider=self.name,
            model=model,
            stage=stage,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_creation_tokens=usage.cache_creation_input_tokens,
            latency_s=round(time.perf_counter() - started, 4),
            cost_usd=round(usage.cost_usd, 6),
        )
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
        ):
            if count:
                LLM_TOKENS.labels(model, stage, kind).inc(count)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        response: LLMResponse | None = None
        cancelled = False
        try:
            response = self._priced(await self.inner.complete(request))
            return response
        except asyncio.CancelledError:
            # The caller gave up (its deadline passed or the run was cancelled).
            cancelled = True
            raise
        finally:
            self._done(request, started, response, cancelled)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        response: LLMResponse | None = None
        cancelled = False
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, StreamEnd):
                    response = self._priced(event.response)
                    yield StreamEnd(response=response)
                else:
                    yield event
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True
            raise
        finally:
            self._done(request, started, response, cancelled)

    async def aclose(self) -> None:
        await self.inner.aclose()
