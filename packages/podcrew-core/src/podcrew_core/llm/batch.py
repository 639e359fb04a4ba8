"""Batch runs' LLM calls through the Message Batches API, at the batch rate (half price).

`BatchProvider` wraps the Anthropic provider. A call made for a hop of a run submitted with
`priority: "batch"` is sent as a Message Batch of one request (`messages.batches.create`),
polled with doubling back-off (`retrieve`) within the hop's deadline, and read back
(`results`); every other call goes straight through. One request per batch rather than
several gathered over a window: a run's calls depend on each other (each research turn needs
the previous answer), so a window would only delay each call by its length to save batch
creations, which cost nothing, and would tie unrelated runs' calls together. Batches do not
stream: a streamed call (the writer's report) is answered whole, as one delta then the end.
A batch that has not ended when the deadline is near is cancelled and the call fails
`deadline-exceeded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anthropic
import orjson

from podcrew_core.contracts.errors import (
    DeadlineExceeded,
    LLMError,
    LLMRejected,
    LLMServerError,
    LLMTimeout,
)
from podcrew_core.llm.anthropic import from_json, map_error, to_params
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEnd, StreamEvent, TextDelta
from podcrew_core.runtime.scope import current_priority, time_left

if TYPE_CHECKING:
    from podcrew_core.llm.anthropic import AnthropicProvider
    from podcrew_core.llm.settings import LLMSettings

_CUSTOM_ID = "call"
# What a batch's answer needs after the last poll: reading its results.
_READ_MARGIN_S = 1.0
# Error types of a failed request in a batch that another attempt may fix.
_RETRYABLE = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


class BatchProvider:
    """The Anthropic provider, with batch runs' calls sent as Message Batches."""

    def __init__(self, inner: AnthropicProvider, settings: LLMSettings) -> None:
        self.inner = inner
        self.name = inner.name
        self._batches = inner.client.messages.batches
        self._poll_s = settings.batch_poll_initial_s
        self._poll_max_s = settings.batch_poll_max_s

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if current_priority() != "batch":
            return await self.inner.complete(request)
        return await self.batch(request)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        if current_priority() != "batch":
            async for event in self.inner.stream(request):
                yield event
            return
        response = await self.batch(request)
        text = response.text()
        if text:
            yield TextDelta(text=text)
        yield StreamEnd(response=response)

    async def batch(self, request: LLMRequest) -> LLMResponse:
        """`request` as a one-request Message Batch: create, poll, read the result."""
        started = time.perf_counter()
        item: dict[str, Any] = {"custom_id": _CUSTOM_ID, "params": to_params(request)}
        try:
            batch = await self._batches.create(requests=[item], timeout=self.inner.timeout())  # type: ignore[list-item]
            delay = self._poll_s
            while batch.processing_status != "ended":
                if time_left(float("inf")) < delay + _READ_MARGIN_S:
                    await self._cancel(batch.id)
                    raise DeadlineExceeded(
                        f"the Message Batch {batch.id} had not ended when the deadline came"
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._poll_max_s)
                batch = await self._batches.retrieve(batch.id, timeout=self.inner.timeout())
            results = await self._batches.results(batch.id, timeout=self.inner.timeout())
            lines = [line async for line in results]
        except anthropic.APIError as exc:
            raise map_error(exc) from exc
        return _answer(lines, time.perf_counter() - started)

    async def _cancel(self, batch_id: str) -> None:
        """Stop paying for an answer no one will read (best effort)."""
        with contextlib.suppress(anthropic.APIError, DeadlineExceeded):
            await self._batches.cancel(batch_id, timeout=self.inner.timeout())

    async def aclose(self) -> None:
        await self.inner.aclose()


def _answer(lines: list[Any], latency_s: float) -> LLMResponse:
    """The response in a batch's result lines, at the batch rate; or the error it reports."""
    line = next((line for line in lines if line.custom_id == _CUSTOM_ID), None)
    if line is None:
        raise LLMError("the Message Batch ended without a result for the call")
    result = line.result
    if result.type == "succeeded":
        message = orjson.loads(result.message.to_json())
        return from_json(message, latency_s).model_copy(update={"batch": True})
    if result.type == "errored":
        error = result.error.error
        detail = f"the batched LLM call failed: {error.type}: {error.message}"[:500]
        if error.type in _RETRYABLE:
            raise LLMServerError(detail)
        raise LLMRejected(detail)
    if result.type == "expired":
        raise LLMTimeout("the Message Batch expired before the call was answered")
    raise LLMError(f"the Message Batch ended with the call {result.type}")
