"""The offline provider: a deterministic model with no network, the embedded default.

Like pydantic-ai's `TestModel`, it answers from what a request offers — the tools and their
JSON schemas, the forced `tool_choice`, the conversation and its tool results — and knows
nothing of the application that asks: no tool names, no prompts. So the code path a run
exercises on it — the tool loop, forced tool use, streaming — is the real one. The
simulated Messages API answers with the same `respond()`.

How it reads a conversation:

- Its *data* is the JSON object that a text block of the first user message holds, if one
  does (the normal way to hand a model structured input); its *subject* is the first string
  in that data, or else the first line of that message.
- Its *records* are the JSON objects, at any depth, of the tool results that are not
  errors, taken in turn from each result (the first of every result, then the second...),
  so what it reports draws on every search it made; a result that is not JSON is one
  record, `{"text": ...}`.

How it answers, by the first rule that applies:

1. A forced tool (`tool_choice` of type `tool`) is called, its input made from its schema.
2. Offered tools that take no list of objects (function tools), that it has not called
   yet, and whose required inputs it can fill, are called together, after a short text
   (without the text when `tool_choice` is `any`). Tools named `<namespace>__<tool>` are
   many tools of one server (MCP's): of each namespace not called yet it calls only the one
   whose name and description share the most words with the subject, and none when no word
   is shared, as a model picks the tool that fits rather than all it is given.
3. An offered tool that takes a list of objects (an output tool: how a model hands back
   what it found) is called, its lists filled from the records.
4. With `tool_choice` `any`, the first tool is called.
5. Otherwise it answers in text: its data written as a markdown report
   (`podcrew_core.llm.offline.writing.write_document`), or one sentence when the data holds
   no list to write.

How an input is made from a schema (`$ref`s followed, the first non-null branch of a union
taken):

- a property named like a key of the data (or, in an item, of its record) takes that value
  when it fits the property's schema; optional properties are left out unless so named or
  they have a `default`;
- else its `const`, its `default`, or the first of its `enum`;
- else by type: an object is made property by property; a string is the subject (in an
  item, the sentences of its record's longest text that best match the subject, read
  without an element that wholly encloses it such as `<untrusted>…</untrusted>`; a record
  with no such sentence makes no item); a string of `format: uri` is the first URL in the
  user's text (none: a forced call gets `https://example.com/`, an unprompted one is not
  made); an array of strings is the subject split into questions (its clauses, then facets
  of its topic, three when `minItems`/`maxItems` allow); an array of objects gets up to
  four items, one from each record that supplies the item's required objects and arrays
  by name, no two copying the same values, records sharing more words with the subject
  first; a number is its `minimum` or 0; a boolean false;
- an array shorter than its `minItems` is made up to it with items made from the schema.

Usage: input tokens are estimated from the whole request, output tokens from the answer
(`podcrew_core.llm.tokens`), one call each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.offline.inputs import Conversation, Schema, read_conversation
from podcrew_core.llm.offline.writing import terms, write_document
from podcrew_core.llm.tokens import block_tokens, estimate_tokens
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    OutputBlock,
    StopReason,
    StreamEnd,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolSpec,
    ToolUseBlock,
)

NOTHING_TO_ADD = "I have nothing further to add."


def _request_tokens(request: LLMRequest) -> int:
    parts = [request.system]
    parts.extend(m.model_dump_json() for m in request.messages)
    parts.extend(t.model_dump_json() for t in request.tools)
    return sum(estimate_tokens(p) for p in parts)


def _call(tool: ToolSpec, payload: dict[str, Any]) -> ToolUseBlock:
    digest = hashlib.sha256(f"{tool.name}:{json.dumps(payload, sort_keys=True)}".encode())
    return ToolUseBlock(id=f"toolu_{digest.hexdigest()[:24]}", name=tool.name, input=payload)


def _forced_call(tool: ToolSpec, talk: Conversation) -> ToolUseBlock:
    return _call(tool, Schema(tool.input_schema, talk, forced=True).fill() or {})


NAMESPACE_SEPARATOR = "__"
# Words match on their first letters, so "deploys" finds a tool about "deploy".
_STEM = 5


def _stems(text: str) -> set[str]:
    return {w[:_STEM] for w in terms(text.replace("_", " ").replace("-", " "))}


def _fit(tool: ToolSpec, subject: set[str]) -> int:
    """How many of the subject's words the tool's name and description share."""
    return len(subject & _stems(f"{tool.name} {tool.description}"))


def _function_calls(tools: list[ToolSpec], talk: Conversation) -> list[ToolUseBlock]:
    """Rule 2: the function tools not called yet whose input it can fill; of a namespace's
    tools, the one that fits the subject best."""
    calls = []
    subject = _stems(talk.subject)
    called = {n.split(NAMESPACE_SEPARATOR, 1)[0] for n in talk.called if NAMESPACE_SEPARATOR in n}
    best: dict[str, tuple[int, ToolUseBlock]] = {}
    for tool in tools:
        schema = Schema(tool.input_schema, talk, forced=False)
        namespace, separator, _ = tool.name.partition(NAMESPACE_SEPARATOR)
        if tool.name in talk.called or schema.is_output() or namespace in called:
            continue
        fit = _fit(tool, subject) if separator else 0
        if separator and (fit == 0 or fit <= best.get(namespace, (0, None))[0]):
            continue
        payload = schema.fill()
        if payload is None:
            continue
        if separator:
            best[namespace] = (fit, _call(tool, payload))
        else:
            calls.append(_call(tool, payload))
    return calls + [call for _, call in best.values()]


def _output_call(tools: list[ToolSpec], talk: Conversation) -> ToolUseBlock | None:
    """Rule 3: the first output tool, its lists filled from the records."""
    for tool in tools:
        schema = Schema(tool.input_schema, talk, forced=False)
        payload = schema.fill() if schema.is_output() else None
        if payload is not None:
            return _call(tool, payload)
    return None


def respond(request: LLMRequest) -> tuple[list[OutputBlock], StopReason]:
    """What the deterministic model says to `request` (the rules are the module's)."""
    talk = read_conversation(request)
    choice = request.tool_choice
    if choice is not None and choice.type == "tool":
        tool = next((t for t in request.tools if t.name == choice.name), None)
        if tool is not None:
            return [_forced_call(tool, talk)], "tool_use"
    forced_any = choice is not None and choice.type == "any" and bool(request.tools)
    calls = _function_calls(request.tools, talk)
    if calls:
        names = ", ".join(dict.fromkeys(c.name for c in calls))
        preface: list[OutputBlock] = [] if forced_any else [TextBlock(text=f"Calling {names}.")]
        return [*preface, *calls], "tool_use"
    output = _output_call(request.tools, talk)
    if output is None and forced_any:
        output = _forced_call(request.tools[0], talk)
    if output is not None:
        return [output], "tool_use"
    return [TextBlock(text=write_document(talk.data) or NOTHING_TO_ADD)], "end_turn"


def _chunks(text: str, words: int = 6) -> list[str]:
    parts = re.findall(r"\S+\s*", text)
    return ["".join(parts[i : i + words]) for i in range(0, len(parts), words)] or [text]


class OfflineProvider:
    """Deterministic, no network; `latency_s` of think time per call makes demos watchable."""

    name = "offline"

    def __init__(self, latency_s: float = 0.0) -> None:
        self._latency_s = latency_s

    def _answer(self, request: LLMRequest, started: float) -> LLMResponse:
        content, stop = respond(request)
        output = sum(block_tokens(b) for b in content)
        return LLMResponse(
            model=request.model,
            content=content,
            stop_reason=stop,
            usage=Usage(input_tokens=_request_tokens(request), output_tokens=output, llm_calls=1),
            latency_s=time.perf_counter() - started,
        )

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        return self._answer(request, started)

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        response = self._answer(request, started)
        for piece in _chunks(response.text()):
            yield TextDelta(text=piece)
        yield StreamEnd(response=response)

    async def aclose(self) -> None:
        return None
