"""The one interface every LLM provider implements, and structured output on top of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from podcrew_core.contracts.errors import InvalidModelOutput
from podcrew_core.llm.types import LLMRequest, LLMResponse, StreamEvent, ToolChoice, ToolSpec

T = TypeVar("T", bound=BaseModel)


@runtime_checkable
class LLMProvider(Protocol):
    """A model behind the Messages-API shape. Providers never retry on their own account
    beyond what their settings say; the caller's deadline bounds every call."""

    name: str

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """One non-streaming call."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        """Text deltas as they arrive, then exactly one `StreamEnd`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def output_tool(name: str, description: str, model: type[BaseModel]) -> ToolSpec:
    """A tool whose input schema is `model`'s JSON schema: forcing it yields structured output."""
    return ToolSpec(name=name, description=description, input_schema=model.model_json_schema())


async def structured(
    provider: LLMProvider, request: LLMRequest, tool: ToolSpec, model: type[T]
) -> tuple[T, LLMResponse]:
    """Call with `tool` forced and validate its input as `model`.

    Forced tool use is how the Messages API gives structured output; a reply that does not
    validate is the model's fault, reported as `InvalidModelOutput`, never a crash.
    """
    forced = request.model_copy(
        update={
            "tools": [*[t for t in request.tools if t.name != tool.name], tool],
            "tool_choice": ToolChoice(type="tool", name=tool.name),
        }
    )
    response = await provider.complete(forced)
    for block in response.tool_uses():
        if block.name == tool.name:
            try:
                return model.model_validate(block.input), response
            except ValidationError as exc:
                raise InvalidModelOutput(
                    f"{tool.name} output failed validation: {exc.error_count()} error(s)"
                ) from exc
    raise InvalidModelOutput(f"the model did not call {tool.name}")
