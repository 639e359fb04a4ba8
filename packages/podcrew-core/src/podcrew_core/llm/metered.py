"""Metrics for every LLM call, whatever the provider: wraps one and records each call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEnd, StreamEvent
from podcrew_core.metrics import LLM_DURATION, LLM_REQUESTS, LLM_TOKENS


class MeteredProvider:
    """Counts calls, outcomes, latency and tokens by model and stage."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.name = inner.name

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
            response = await self.inner.complete(request)
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
                    response = event.response
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            cancelled = True
            raise
        finally:
            self._done(request, started, response, cancelled)

    async def aclose(self) -> None:
        await self.inner.aclose()
