"""Claude through the official `anthropic` SDK (`AsyncAnthropic`).

The SDK's own retries are off (`max_retries=0`): podcrew retries in `ResilientProvider`,
where the run's deadline and retry budget and the circuit breaker are known. Each call's
timeout is the smaller of `call_timeout_s` and the time the run has left. System prompts
and tool definitions carry `cache_control`, so repeated prefixes are read from the prompt
cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from podcrew_core.deadline import current_deadline
from podcrew_core.errors import (
    DeadlineExceeded,
    LLMError,
    LLMOverloaded,
    LLMRateLimited,
    LLMRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
)
from podcrew_core.llm.settings import LLMSettings
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    OutputBlock,
    StreamEnd,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
)
from podcrew_core.schemas import Usage

_CACHE = {"type": "ephemeral"}
_MIN_CALL_S = 0.05
_STOP_REASONS = {"end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal"}


def _retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds form), as the SDK reads them."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            continue
    return None


def map_error(exc: anthropic.APIError) -> LLMError:  # noqa: PLR0911 - one branch per meaning
    """SDK exceptions → podcrew's errors by meaning (which ones a retry can fix)."""
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMTimeout("the LLM call timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMUnavailable(f"cannot reach the LLM endpoint: {exc.__class__.__name__}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        after = _retry_after(exc.response.headers)
        detail = f"the LLM provider answered {status}: {exc.message}"[:500]
        if status == 429:
            return LLMRateLimited(detail, upstream_status=status, retry_after_s=after)
        if status == 529:
            return LLMOverloaded(detail, upstream_status=status, retry_after_s=after)
        if status >= 500 or status in (408, 409):
            return LLMServerError(detail, upstream_status=status, retry_after_s=after)
        return LLMRejected(detail, upstream_status=status)
    # A mid-stream `error` event or an undecodable response: the SDK does not retry these,
    # and neither do we — the call may have had effects we cannot see.
    return LLMError(f"the LLM call failed: {exc}"[:500])


def to_params(request: LLMRequest) -> dict[str, Any]:
    """podcrew's request → Messages API parameters, with cache breakpoints on the stable
    prefix (tool definitions, then the system prompt)."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": [{"type": "text", "text": request.system, "cache_control": _CACHE}],
        "messages": [
            {
                "role": m.role,
                "content": m.content
                if isinstance(m.content, str)
                else [b.model_dump() for b in m.content],
            }
            for m in request.messages
        ],
    }
    if request.tools:
        tools = [t.model_dump() for t in request.tools]
        tools[-1]["cache_control"] = _CACHE
        params["tools"] = tools
    if request.tool_choice is not None:
        params["tool_choice"] = request.tool_choice.model_dump(exclude_none=True)
    return params


def from_message(message: Any, latency_s: float) -> LLMResponse:
    content: list[OutputBlock] = []
    for block in message.content:
        if block.type == "text":
            content.append(TextBlock(text=block.text))
        elif block.type == "tool_use":
            content.append(ToolUseBlock(id=block.id, name=block.name, input=dict(block.input)))
    usage = message.usage
    stop = message.stop_reason if message.stop_reason in _STOP_REASONS else "end_turn"
    return LLMResponse(
        model=message.model,
        content=content,
        stop_reason=stop,
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            llm_calls=1,
        ),
        latency_s=latency_s,
    )


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        settings: LLMSettings,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "anthropic",
    ) -> None:
        self.name = name
        self._timeout_s = settings.call_timeout_s
        self._connect_s = settings.connect_timeout_s
        self._http = httpx2.AsyncClient(
            limits=httpx2.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
        )
        # api_key/base_url None → the SDK reads ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, http_client=self._http
        )

    def _timeout(self) -> httpx2.Timeout:
        budget = self._timeout_s
        deadline = current_deadline()
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining < _MIN_CALL_S:
                raise DeadlineExceeded("no time left for an LLM call")
            budget = min(budget, remaining)
        return httpx2.Timeout(budget, connect=min(self._connect_s, budget))

    async def complete(self, request: LLMRequest) -> LLMResponse:
        timeout = self._timeout()
        started = time.perf_counter()
        try:
            message = await self._client.messages.create(**to_params(request), timeout=timeout)
        except anthropic.APIError as exc:
            raise map_error(exc) from exc
        return from_message(message, time.perf_counter() - started)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        timeout = self._timeout()
        started = time.perf_counter()
        try:
            async with self._client.messages.stream(
                **to_params(request), timeout=timeout
            ) as stream:
                async for event in stream:
                    if event.type == "text":
                        yield TextDelta(text=event.text)
                message = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise map_error(exc) from exc
        except httpx2.HTTPError as exc:  # a connection dropped mid-stream
            raise LLMUnavailable(f"the LLM stream broke: {exc.__class__.__name__}") from exc
        yield StreamEnd(response=from_message(message, time.perf_counter() - started))

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()
