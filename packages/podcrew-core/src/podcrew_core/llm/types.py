"""The LLM layer's vocabulary, in the shape of the Anthropic Messages API.

Every provider speaks these types, so the research loop that runs on the offline provider
is byte for byte the loop that runs on Claude: the same messages, content blocks, tool
definitions, forced tool choice and stop reasons.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.ratelimit_headers import ProviderLimits


class Stage(StrEnum):
    """Which step of the pipeline an LLM call serves; each has its own model."""

    PLAN = "plan"
    RESEARCH = "research"
    WRITE = "write"


class TextBlock(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]
OutputBlock = Annotated[TextBlock | ToolUseBlock, Field(discriminator="type")]


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    def blocks(self) -> list[TextBlock | ToolUseBlock | ToolResultBlock]:
        if isinstance(self.content, str):
            return [TextBlock(text=self.content)]
        return list(self.content)

    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks() if isinstance(b, TextBlock))


class ToolSpec(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class ToolChoice(BaseModel):
    """`auto` lets the model decide; `tool` forces the named tool (structured output)."""

    type: Literal["auto", "any", "tool"] = "auto"
    name: str | None = None


class LLMRequest(BaseModel):
    stage: Stage
    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int = 1024


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal"]


class LLMResponse(BaseModel):
    model: str
    content: list[OutputBlock]
    stop_reason: StopReason
    usage: Usage
    latency_s: float = 0.0
    batch: bool = False  # answered through the Message Batches API: priced at the batch rate
    # What the provider said about its rate limits, for the shared limiter; never sent on.
    provider_limits: ProviderLimits | None = Field(default=None, exclude=True, repr=False)

    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


class TextDelta(BaseModel):
    """A piece of streamed text."""

    text: str


class StreamEnd(BaseModel):
    """The final event of a stream: the whole response with its usage."""

    response: LLMResponse


StreamEvent = TextDelta | StreamEnd
