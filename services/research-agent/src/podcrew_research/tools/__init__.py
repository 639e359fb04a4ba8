"""The research loop's tools: what a tool is, and the adapters that expose each one to the
model (input validated, output as the JSON the model reads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from podcrew_core.contracts.errors import ToolError
from podcrew_core.contracts.schemas import Source
from podcrew_core.llm.types import ToolSpec

InputT = TypeVar("InputT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool hands back: `content` is the tool_result text the model reads, `sources`
    the sources it showed, which findings may cite."""

    content: str
    sources: list[Source] = field(default_factory=list)
    cached: bool = False


# A tool takes the model's input; the time it may take is what the hop being served has
# left (`podcrew_core.runtime.scope.time_left`), read like every LLM call reads it.
ToolFn = Callable[[dict[str, Any]], Awaitable[ToolOutput]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: its definition and the coroutine that runs it.

    `run` raises `podcrew_core.contracts.errors.ToolError` (or a subclass) for a failure the model
    should hear about; the loop reports it as an `is_error` tool result.
    """

    spec: ToolSpec
    run: ToolFn
    # The metric and span label of its calls when its name is not a bounded one (a tool an
    # MCP server named).
    label: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metric_label(self) -> str:
        """What its calls are counted and traced under."""
        return self.label or self.spec.name


class Toolbox(Protocol):
    """Tools that come and go while the agent runs (those of MCP servers): each research call
    offers the ones available when it starts."""

    def tools(self) -> Sequence[Tool]:
        """The tools available now."""
        ...

    def unavailable(self) -> list[str]:
        """What cannot be offered now because it cannot be reached (`mcp:<server>`)."""
        ...


def parse_input(model: type[InputT], tool: str, arguments: dict[str, Any]) -> InputT:
    """The model's `arguments` to `tool` as `model`; a `ToolError` (which the model is shown)
    naming the first thing wrong with them if they do not validate."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolError(f"invalid {tool} input: {exc.errors()[0]['msg']}") from exc
