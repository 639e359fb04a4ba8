"""The offline provider: a deterministic model with no network, the embedded default.

It answers the way a real model would answer podcrew's conversations, from the request
alone: asked to plan, it calls `submit_plan`; offered `kb_search` with nothing searched yet,
it searches; given tool results, it submits findings drawn from them; asked to write, it
writes a cited report from the numbered findings. So the code path it exercises — the tool
loop, forced tool use, streaming — is the real one. The simulated Messages API server
answers with the same `respond()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from podcrew_core.contracts.schemas import MAX_SUBQUESTIONS, MIN_SUBQUESTIONS, Usage
from podcrew_core.llm import protocol
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
    ToolResultBlock,
    ToolUseBlock,
)

_FACETS = (
    "What are the essentials of {t}?",
    "What are the mechanics of {t}?",
    "What are common pitfalls with {t}?",
    "How is {t} used in practice?",
    "What alternatives to {t} exist?",
    "How has {t} changed over time?",
)
# Clauses end at "?" or ";", or at "and" when a new question starts after it.
_CLAUSE_SPLIT = re.compile(
    r"\s*(?:\?|;|,?\s+and\s+(?=(?:how|what|why|when|where|which|who|is|are|do|does|can)\b))\s*",
    re.IGNORECASE,
)
_QUESTION_FRAME = re.compile(
    r"^(?:what|how|why|when|where|which|who)\s+(?:is|are|do|does|can)\s+|\s+(?:work|works)$",
    re.IGNORECASE,
)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_MIN_CLAIM_WORDS = 6
_WORD = re.compile(r"[a-z0-9_]+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "does",
        "do",
        "for",
        "from",
        "how",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "work",
        "works",
    ]
)


def _request_tokens(request: LLMRequest) -> int:
    parts = [request.system]
    parts.extend(m.model_dump_json() for m in request.messages)
    parts.extend(t.model_dump_json() for t in request.tools)
    return sum(estimate_tokens(p) for p in parts)


def _tool_use_id(name: str, payload: Any) -> str:
    digest = hashlib.sha256(f"{name}:{json.dumps(payload, sort_keys=True)}".encode()).hexdigest()
    return f"toolu_{digest[:24]}"


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def plan(question: str, max_subquestions: int) -> list[str]:
    """Split a question into 2..max sub-questions: its clauses first, then facets of it."""
    limit = max(MIN_SUBQUESTIONS, min(MAX_SUBQUESTIONS, max_subquestions))
    clauses = [c.strip(" ,.") for c in _CLAUSE_SPLIT.split(question) if len(c.split()) >= 3]
    subs = [c[0].upper() + c[1:] + "?" for c in clauses]
    topic = _QUESTION_FRAME.sub("", clauses[0] if clauses else question.strip(" ?."))
    target = max(MIN_SUBQUESTIONS, min(limit, max(len(subs), 3)))
    for facet in _FACETS:
        if len(subs) >= target:
            break
        candidate = facet.format(t=topic)
        if candidate not in subs:
            subs.append(candidate)
    return subs[:target]


def _hits(results: list[ToolResultBlock]) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []
    for block in results:
        if block.is_error:
            continue
        try:
            data = json.loads(block.content)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("hits"), list):
            hits.extend(h for h in data["hits"] if isinstance(h, dict))
        elif isinstance(data, dict) and "source" in data and "text" in data:
            hits.append(data)
    return hits


def findings(
    sub_question: str, results: list[ToolResultBlock], limit: int = 4
) -> list[dict[str, Any]]:
    """One claim per source: the sentences of a passage that best match the question."""
    wanted = _terms(sub_question)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for hit in _hits(results):
        source = hit.get("source")
        text = str(hit.get("text", ""))
        if not isinstance(source, dict) or not text or source.get("id") in seen:
            continue
        sentences = [s.strip() for s in _SENTENCE_SPLIT.split(" ".join(text.split())) if s.strip()]
        # A claim should say something: skip fragments like "New in version 3.5."
        sentences = [s for s in sentences if len(s.split()) >= _MIN_CLAIM_WORDS] or sentences
        if not sentences:
            continue
        best = max(range(len(sentences)), key=lambda i: (len(_terms(sentences[i]) & wanted), -i))
        claim = " ".join(sentences[best : best + 2])
        if len(claim) > 400:
            claim = claim[:397].rsplit(" ", 1)[0] + "…"
        seen.add(str(source.get("id")))
        out.append({"claim": claim, "source": source})
        if len(out) >= limit:
            break
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def write(payload: dict[str, Any]) -> str:
    """A markdown report from the writer's numbered findings; every claim cites its number."""
    question = str(payload.get("question", "")).strip()
    sections = [s for s in payload.get("sections", []) if isinstance(s, dict)]
    unresearched = [str(u) for u in payload.get("unresearched", [])]
    cited = sorted({f["n"] for s in sections for f in s.get("findings", []) if "n" in f})
    lines = [f"# {question}", ""]
    if cited:
        lines += [
            f"This report answers the question in {_count(len(sections), 'part')}, drawing on "
            f"{_count(len(cited), 'source')}.",
            "",
        ]
    else:
        lines += ["No sources could be found for this question.", ""]
    for section in sections:
        found = section.get("findings", [])
        lines += [f"## {section.get('sub_question', '')}", ""]
        if not found:
            lines += ["Nothing relevant was found for this part.", ""]
            continue
        lines += [f"- {f['claim']} [{f['n']}]" for f in found]
        lines.append("")
    if unresearched:
        lines += ["## Not researched", "", "These parts could not be researched:", ""]
        lines += [f"- {u}" for u in unresearched]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def respond(request: LLMRequest) -> tuple[list[OutputBlock], StopReason]:
    """What podcrew's deterministic model says to `request`."""
    tools = {t.name for t in request.tools}
    forced = (
        request.tool_choice.name
        if request.tool_choice and request.tool_choice.type == "tool"
        else None
    )
    first_user = next((m.text() for m in request.messages if m.role == "user"), "")
    results = [
        b
        for m in request.messages
        if m.role == "user"
        for b in m.blocks()
        if isinstance(b, ToolResultBlock)
    ]

    if forced == protocol.PLAN_TOOL or (forced is None and protocol.PLAN_TOOL in tools):
        question, max_n = protocol.parse_plan_message(first_user)
        payload: dict[str, Any] = {"sub_questions": plan(question, max_n)}
        return [
            ToolUseBlock(
                id=_tool_use_id(protocol.PLAN_TOOL, payload), name=protocol.PLAN_TOOL, input=payload
            )
        ], "tool_use"

    sub_question, _ = protocol.parse_research_message(first_user)
    searched = bool(results)
    if forced == protocol.FINDINGS_TOOL or (
        protocol.FINDINGS_TOOL in tools and (searched or protocol.KB_SEARCH_TOOL not in tools)
    ):
        payload = {"findings": findings(sub_question, results)}
        return [
            ToolUseBlock(
                id=_tool_use_id(protocol.FINDINGS_TOOL, payload),
                name=protocol.FINDINGS_TOOL,
                input=payload,
            )
        ], "tool_use"

    if protocol.KB_SEARCH_TOOL in tools and not searched:
        payload = {"query": sub_question, "k": 5}
        return [
            TextBlock(text="Searching the knowledge base."),
            ToolUseBlock(
                id=_tool_use_id(protocol.KB_SEARCH_TOOL, payload),
                name=protocol.KB_SEARCH_TOOL,
                input=payload,
            ),
        ], "tool_use"

    write_payload = protocol.parse_write_message(first_user)
    if write_payload is not None:
        return [TextBlock(text=write(write_payload))], "end_turn"
    return [TextBlock(text="I have nothing further to add.")], "end_turn"


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
