"""The Messages API on the wire: requests as Anthropic documents them, and the JSON bodies,
stream events and error bodies the official SDK expects back.

Only the part of the request podcrew sends is modelled (text, tool_use and tool_result
blocks, custom tools, tool_choice, prompt caching marks); other keys such as `temperature`
or `metadata` are accepted and ignored, as a model that cannot use them would.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from podcrew_core.llm.types import (
    LLMRequest,
    Message,
    OutputBlock,
    Stage,
    StopReason,
    TextBlock,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]

_WORDS_PER_DELTA = 4
_MAX_CACHE_MARKS = 4


class _Wire(BaseModel):
    # Strict: the API refuses `"max_tokens": "5"`, so the simulator must not coerce it.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class CacheControl(_Wire):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] = "5m"


class TextParam(_Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ToolUseParam(_Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultParam(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextParam] = ""
    is_error: bool = False
    cache_control: CacheControl | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(block.text for block in self.content)


BlockParam = Annotated[TextParam | ToolUseParam | ToolResultParam, Field(discriminator="type")]


class MessageParam(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[BlockParam]


class ToolParam(_Wire):
    type: Literal["custom"] = "custom"
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str = ""
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolChoiceParam(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class MessagesRequest(_Wire):
    """The body of `POST /v1/messages`."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextParam] = ""
    tools: list[ToolParam] = Field(default_factory=list)
    tool_choice: ToolChoiceParam | None = None
    stream: bool = False
    cache_control: CacheControl | None = Field(
        default=None, description="Marks the last block of the prompt, wherever it is."
    )

    @model_validator(mode="after")
    def _as_the_api_checks(self) -> Self:
        # The rules the API enforces that a shape cannot say; a simulator that let them pass
        # would hide bugs the real API turns into 400s.
        _check_tools(self.tools, self.tool_choice)
        _check_messages(self.messages)
        for k, block in enumerate([] if isinstance(self.system, str) else self.system):
            if not block.text.strip():
                raise ValueError(f"system.{k}.text: text content blocks must be non-empty")
        _check_cache_marks(self)
        return self

    def tools_hidden(self) -> bool:
        """`tool_choice: none` means the model answers as if no tools were offered."""
        return self.tool_choice is not None and self.tool_choice.type == "none"


def _check_tools(tools: list[ToolParam], choice: ToolChoiceParam | None) -> None:
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError("tools: tool names must be unique")
    if choice is not None and choice.type == "tool" and choice.name not in names:
        raise ValueError(f"tool_choice: tool {choice.name!r} is not among the tools offered")
    if choice is not None and choice.type == "any" and not names:
        raise ValueError("tool_choice: 'any' requires at least one tool")


def _blocks(message: MessageParam) -> list[BlockParam]:
    return [] if isinstance(message.content, str) else message.content


def _tool_use_ids(message: MessageParam) -> list[str]:
    return [b.id for b in _blocks(message) if isinstance(b, ToolUseParam)]


def _check_messages(messages: list[MessageParam]) -> None:
    last = len(messages) - 1
    for i, message in enumerate(messages):
        if not message.content and not (i == last and message.role == "assistant"):
            raise ValueError(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for k, block in enumerate(_blocks(message)):
            if isinstance(block, TextParam) and not block.text.strip():
                raise ValueError(
                    f"messages.{i}.content.{k}.text: text content blocks must be non-empty"
                )
        _check_tool_pairs(messages, i)


def _check_tool_pairs(messages: list[MessageParam], i: int) -> None:
    """Every tool_use is answered by a tool_result in the very next message, and every
    tool_result answers a tool_use of the message before it."""
    message = messages[i]
    if message.role == "assistant" and i + 1 < len(messages):
        answered = {
            b.tool_use_id for b in _blocks(messages[i + 1]) if isinstance(b, ToolResultParam)
        }
        missing = [u for u in _tool_use_ids(message) if u not in answered]
        if missing:
            raise ValueError(
                f"messages.{i}: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(missing)}"
            )
    asked = set(_tool_use_ids(messages[i - 1])) if i > 0 else set()
    for k, block in enumerate(_blocks(message)):
        if isinstance(block, ToolResultParam) and block.tool_use_id not in asked:
            raise ValueError(
                f"messages.{i}.content.{k}: unexpected tool_use_id found in tool_result blocks: "
                f"{block.tool_use_id}; each tool_result needs a tool_use in the previous message"
            )


def _check_cache_marks(request: MessagesRequest) -> None:
    marks = [t.cache_control for t in request.tools]
    marks += [] if isinstance(request.system, str) else [b.cache_control for b in request.system]
    marks += [b.cache_control for m in request.messages for b in _blocks(m)]
    marks.append(request.cache_control)
    found = sum(mark is not None for mark in marks)
    if found > _MAX_CACHE_MARKS:
        raise ValueError(
            f"A maximum of {_MAX_CACHE_MARKS} blocks with cache_control may be provided. "
            f"Found {found}."
        )


def parse_request(body: bytes) -> MessagesRequest:
    """The request, or `ValueError` with a message in the API's style."""
    try:
        return MessagesRequest.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] == "json_invalid":
            raise ValueError("There was an error parsing the body: it is not valid JSON") from exc
        if error["type"] == "value_error":
            # The API's own rules, already worded with their place in the request.
            raise ValueError(str(error.get("ctx", {}).get("error", error["msg"]))) from exc
        where = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{where}: {error['msg']}" if where else error["msg"]) from exc


def system_text(system: str | list[TextParam]) -> str:
    """The system prompt as one string."""
    if isinstance(system, str):
        return system
    return "\n".join(block.text for block in system)


def _content(
    content: str | list[BlockParam],
) -> str | list[TextBlock | ToolUseBlock | ToolResultBlock]:
    if isinstance(content, str):
        return content
    blocks: list[TextBlock | ToolUseBlock | ToolResultBlock] = []
    for block in content:
        if isinstance(block, TextParam):
            blocks.append(TextBlock(text=block.text))
        elif isinstance(block, ToolUseParam):
            blocks.append(ToolUseBlock(id=block.id, name=block.name, input=block.input))
        else:
            blocks.append(
                ToolResultBlock(
                    tool_use_id=block.tool_use_id, content=block.text(), is_error=block.is_error
                )
            )
    return blocks


def to_llm_request(request: MessagesRequest) -> LLMRequest:
    """podcrew's form of the request, for the deterministic model to answer."""
    choice = request.tool_choice
    tool_choice = None
    if choice is not None and choice.type != "none":
        tool_choice = ToolChoice(type=choice.type, name=choice.name)
    tools = [
        ToolSpec(name=t.name, description=t.description, input_schema=t.input_schema)
        for t in request.tools
    ]
    return LLMRequest(
        # The deterministic model reads the conversation, never the stage.
        stage=Stage.RESEARCH,
        model=request.model,
        system=system_text(request.system),
        messages=[Message(role=m.role, content=_content(m.content)) for m in request.messages],
        tools=[] if request.tools_hidden() else tools,
        tool_choice=tool_choice,
        max_tokens=request.max_tokens,
    )


def new_message_id() -> str:
    """A message id in the API's `msg_` form."""
    return f"msg_{secrets.token_hex(12)}"


def new_request_id() -> str:
    """A request id in the API's `req_` form, sent as the `request-id` header."""
    return f"req_{secrets.token_hex(12)}"


def block_json(block: OutputBlock) -> dict[str, Any]:
    """A content block as the API sends it."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}


def message_json(
    *,
    message_id: str,
    model: str,
    content: list[OutputBlock],
    stop_reason: StopReason | None,
    usage: dict[str, int],
) -> dict[str, Any]:
    """A `message` object: the body of a non-streaming reply, or (empty) of `message_start`."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block_json(b) for b in content],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def error_json(kind: ErrorType, message: str, request_id: str | None) -> dict[str, Any]:
    """An error body in the API's shape."""
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


@functools.cache
def _piece_pattern(words: int) -> re.Pattern[str]:
    # Up to `words` words, each with the whitespace after it, so the pieces keep every
    # whitespace character and concatenate back to the text; only the first piece can start
    # with whitespace. One pass of one pattern: splitting into words and joining them again
    # cost twice as much.
    return re.compile(rf"\s*(?:\S+\s*){{1,{words}}}")


def pieces(text: str, words: int = _WORDS_PER_DELTA) -> list[str]:
    """`text` in delta-sized pieces that concatenate back to it exactly."""
    parts: list[str] = _piece_pattern(words).findall(text)
    return parts or ([text] if text else [])


def stream_events(
    *,
    message_id: str,
    model: str,
    content: list[OutputBlock],
    stop_reason: StopReason,
    usage: dict[str, int],
) -> list[dict[str, Any]]:
    """The events of a streamed reply, in the order the API sends them, without timing."""
    start_usage = usage | {"output_tokens": min(1, usage["output_tokens"])}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": message_json(
                message_id=message_id, model=model, content=[], stop_reason=None, usage=start_usage
            ),
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(content):
        if isinstance(block, TextBlock):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block.text)]
        else:
            start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            # json.dumps leaves spaces after ':' and ',', so the JSON splits between tokens.
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in pieces(json.dumps(block.input))
            ]
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            # Cumulative, as the API reports it: the SDK overwrites rather than adds.
            "usage": usage,
        }
    )
    events.append({"type": "message_stop"})
    return events


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event; the API names each event after its `type`."""
    return b"event: %s\ndata: %s\n\n" % (event["type"].encode(), orjson.dumps(event))
