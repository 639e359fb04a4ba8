"""Metrics and GenAI spans for every LLM call, whatever the provider: wraps one and records
each attempt.

Per call: podcrew's own metrics (calls by outcome, latency, tokens and cost by model and
stage, time to first token of a stream), the OpenTelemetry GenAI metrics
(`gen_ai_client_token_usage`, `gen_ai_client_operation_duration_seconds`, time to first
chunk), a `chat {model}` span with the `gen_ai.*` attributes, and one `llm_call` log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from podcrew_core.contracts.errors import LLMError
from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.pricing import PriceTable
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEnd, StreamEvent, TextDelta
from podcrew_core.runtime import tracing
from podcrew_core.runtime.logging import current_run_id
from podcrew_core.runtime.metrics import (
    GENAI_OPERATION_DURATION,
    GENAI_TIME_TO_FIRST_CHUNK,
    GENAI_TOKEN_USAGE,
    LLM_COST,
    LLM_DURATION,
    LLM_REQUESTS,
    LLM_TIME_TO_FIRST_TOKEN,
    LLM_TOKENS,
    Children,
)

log = structlog.get_logger(__name__)

# Every call looks up about a dozen labelled children: from a dict, not `labels()`.
_TTFT = Children(LLM_TIME_TO_FIRST_TOKEN)
_GENAI_TTFC = Children(GENAI_TIME_TO_FIRST_CHUNK)
_REQUESTS = Children(LLM_REQUESTS)
_DURATION = Children(LLM_DURATION)
_GENAI_DURATION = Children(GENAI_OPERATION_DURATION)
_COST = Children(LLM_COST)
_TOKENS = Children(LLM_TOKENS)
_GENAI_TOKENS = Children(GENAI_TOKEN_USAGE)

CHAT = "chat"
# `gen_ai.provider.name` is the telemetry flavour: the simulator speaks Anthropic's API
# through Anthropic's SDK, so its calls are reported as anthropic calls (podcrew's own
# metrics keep `provider="simulated"`).
GENAI_PROVIDERS = {
    "anthropic": "anthropic",
    "simulated": "anthropic",
    "bedrock": "aws.bedrock",
    "vertex": "gcp.vertex_ai",
}


def genai_provider_name(provider: str) -> str:
    return GENAI_PROVIDERS.get(provider, f"podcrew.{provider}")


def error_type(error: BaseException) -> str:
    """A bounded `error.type`: the upstream status or error kind, else the class name."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    if isinstance(error, LLMError):
        return error.reason
    return error.__class__.__name__


def _content(request: LLMRequest) -> dict[str, str]:
    """Opt-in message content (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`)."""
    messages = [m.model_dump(mode="json") for m in request.messages]
    return {
        "gen_ai.system_instructions": orjson.dumps(
            [{"type": "text", "content": request.system}]
        ).decode(),
        "gen_ai.input.messages": orjson.dumps(messages).decode(),
    }


class _Call:
    """One attempt: its clock, its span, and everything recorded when it ends."""

    def __init__(self, meter: MeteredProvider, request: LLMRequest, streaming: bool) -> None:
        self.meter = meter
        self.request = request
        self.stage = request.stage.value
        self.started = time.perf_counter()
        self.first_chunk_at: float | None = None
        self.done = False
        attributes: dict[str, Any] = {
            tracing.OPERATION: CHAT,
            tracing.PROVIDER: meter.genai_provider,
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "podcrew.llm.stage": self.stage,
            "podcrew.llm.streaming": streaming,
        }
        run_id = current_run_id()
        if run_id:
            attributes[tracing.CONVERSATION] = run_id
        if meter.capture_content:
            attributes.update(_content(request))
        # Not made current: a chat span has no children, and an async generator must not
        # leave a span attached to its consumer's context between two deltas.
        self.span: Span = tracing.tracer().start_span(
            f"{CHAT} {request.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def first_chunk(self) -> None:
        if self.first_chunk_at is not None:
            return
        self.first_chunk_at = time.perf_counter()
        ttft = self.first_chunk_at - self.started
        model = self.request.model
        _TTFT(self.meter.name, model, self.stage).observe(ttft)
        _GENAI_TTFC(CHAT, self.meter.genai_provider, model).observe(ttft)
        self.span.add_event("gen_ai.first_chunk", {"podcrew.llm.ttft_s": round(ttft, 6)})

    def _durations(self, response_model: str, outcome: str, err_type: str) -> float:
        elapsed = time.perf_counter() - self.started
        meter, request = self.meter, self.request
        _REQUESTS(meter.name, response_model, self.stage, outcome).inc()
        _DURATION(meter.name, response_model, self.stage).observe(elapsed)
        _GENAI_DURATION(
            CHAT, meter.genai_provider, request.model, response_model, err_type
        ).observe(elapsed)
        return elapsed

    def succeeded(self, response: LLMResponse) -> None:
        if self.done:
            return
        self.done = True
        model, usage, stage = response.model, response.usage, self.stage
        elapsed = self._durations(model, "ok", "")
        _COST(model, stage).inc(usage.cost_usd)
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
        ):
            if count:
                _TOKENS(model, stage, kind).inc(count)
        # The GenAI conventions count cached input as input (Anthropic reports it apart).
        all_input = (
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        )
        provider, requested = self.meter.genai_provider, self.request.model
        for kind, count in (("input", all_input), ("output", usage.output_tokens)):
            _GENAI_TOKENS(CHAT, provider, kind, requested, model).observe(count)
        span = self.span
        span.set_attributes(
            {
                "gen_ai.response.model": model,
                "gen_ai.response.finish_reasons": [response.stop_reason],
                "gen_ai.usage.input_tokens": all_input,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": usage.cache_read_input_tokens,
                "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_input_tokens,
                "podcrew.llm.cost_usd": usage.cost_usd,
            }
        )
        if self.meter.capture_content:
            output = [{"role": "assistant", "content": [b.model_dump() for b in response.content]}]
            span.set_attribute("gen_ai.output.messages", orjson.dumps(output).decode())
        with trace.use_span(span, end_on_exit=True):
            log.info(
                "llm_call",
                provider=self.meter.name,
                model=model,
                stage=stage,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_input_tokens,
                cache_creation_tokens=usage.cache_creation_input_tokens,
                latency_s=round(elapsed, 4),
                ttft_s=round(self.first_chunk_at - self.started, 4)
                if self.first_chunk_at is not None
                else None,
                cost_usd=round(usage.cost_usd, 6),
            )

    def failed(self, error: BaseException) -> None:
        if self.done:
            return
        self.done = True
        cancelled = isinstance(error, asyncio.CancelledError | GeneratorExit)
        kind = error_type(error)
        self._durations(self.request.model, "cancelled" if cancelled else "error", kind)
        tracing.record_error(self.span, error, kind)
        self.span.end()


class MeteredProvider:
    """Prices every call and records it: calls, outcomes, latency, time to first token,
    tokens and cost by model and stage, a GenAI `chat` span, one `llm_call` log line."""

    def __init__(self, inner: LLMProvider, prices: PriceTable) -> None:
        self.inner = inner
        self.name = inner.name
        self.genai_provider = genai_provider_name(inner.name)
        self.prices = prices
        # Read once: the environment does not change under a running process, and reading
        # it twice per call was a visible share of a research call's own CPU.
        self.capture_content = tracing.capture_content()

    def _priced(self, response: LLMResponse) -> LLMResponse:
        cost = self.prices.cost(response.model, response.usage, batch=response.batch)
        return response.model_copy(
            update={"usage": response.usage.model_copy(update={"cost_usd": cost})}
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        call = _Call(self, request, streaming=False)
        try:
            response = self._priced(await self.inner.complete(request))
        except BaseException as exc:  # cancelled too: the caller gave up (deadline, cancel)
            call.failed(exc)
            raise
        call.succeeded(response)
        return response

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        call = _Call(self, request, streaming=True)
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, StreamEnd):
                    response = self._priced(event.response)
                    # Recorded before the last yield: a consumer may stop reading here.
                    call.succeeded(response)
                    yield StreamEnd(response=response)
                else:
                    # Nearly every event is a delta: after the first, pass it straight on.
                    if call.first_chunk_at is None and isinstance(event, TextDelta):
                        call.first_chunk()
                    yield event
        except BaseException as exc:  # GeneratorExit when the consumer stops early
            call.failed(exc)
            raise
        if not call.done:
            call.failed(LLMError("the stream ended without a final message"))

    async def aclose(self) -> None:
        await self.inner.aclose()
