"""The budget check in the provider chain: a call is refused before it starts when the run,
its tenant or everyone has spent their budget, and charged with what it used after."""

from __future__ import annotations

from collections.abc import AsyncIterator

from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEnd, StreamEvent
from podcrew_core.runtime.scope import current_spend


class BudgetedProvider:
    """Checks the budgets of the hop being served before each call and charges what the
    call used."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.name = inner.name

    async def complete(self, request: LLMRequest) -> LLMResponse:
        scope = current_spend()
        if scope is not None:
            await scope.check()
        response = await self.inner.complete(request)
        if scope is not None:
            await scope.charge(response.usage)
        return response

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        scope = current_spend()
        if scope is not None:
            await scope.check()
        async for event in self.inner.stream(request):
            if isinstance(event, StreamEnd) and scope is not None:
                await scope.charge(event.response.usage)
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()
