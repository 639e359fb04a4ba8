"""Report composition: number the sources, let the model write, append the source list.

The numbered source list is built here, not by the model, so every `[n]` in the report
points at a real source whatever the model writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from podcrew_core.contracts.errors import LLMError
from podcrew_core.contracts.schemas import SourceRef, WriteRequest, WriteResponse
from podcrew_core.llm import LLMProvider, LLMRequest, LLMResponse, Message, Stage
from podcrew_core.llm.protocol import write_message
from podcrew_core.llm.types import StreamEnd, TextDelta
from podcrew_core.runtime.batching import batch_deltas

SYSTEM_PROMPT = (
    "You are podcrew's writer. Write a concise, well-structured markdown report that answers "
    "the question using only the numbered findings you are given. Cite every claim with the "
    "number of its finding in square brackets, like [2]. Do not invent sources. If some parts "
    "could not be researched, say so plainly."
)


@dataclass(frozen=True)
class Draft:
    request: LLMRequest
    sources: list[SourceRef]


def prepare(body: WriteRequest, model: str, max_tokens: int) -> Draft:
    """Number each distinct source once, in order of first appearance."""
    numbers: dict[str, int] = {}
    sources: list[SourceRef] = []
    sections = []
    for section in body.sections:
        items = []
        for finding in section.findings:
            n = numbers.get(finding.source.id)
            if n is None:
                n = numbers[finding.source.id] = len(numbers) + 1
                sources.append(SourceRef(number=n, source=finding.source))
            items.append({"n": n, "claim": finding.claim, "source_title": finding.source.title})
        sections.append({"sub_question": section.sub_question, "findings": items})
    payload = {"question": body.question, "sections": sections, "unresearched": body.unresearched}
    request = LLMRequest(
        stage=Stage.WRITE,
        model=model,
        system=SYSTEM_PROMPT,
        messages=[Message(role="user", content=write_message(payload))],
        max_tokens=max_tokens,
    )
    return Draft(request=request, sources=sources)


def sources_section(sources: list[SourceRef]) -> str:
    if not sources:
        return ""
    lines = ["", "## Sources", ""]
    for ref in sources:
        where = f" — {ref.source.url}" if ref.source.url else f" ({ref.source.id})"
        lines.append(f"{ref.number}. {ref.source.title}{where}")
    return "\n".join(lines) + "\n"


async def write(provider: LLMProvider, draft: Draft) -> WriteResponse:
    response = await provider.complete(draft.request)
    return WriteResponse(
        report=response.text().rstrip() + "\n" + sources_section(draft.sources),
        sources=draft.sources,
        usage=response.usage,
        model=response.model,
    )


async def write_stream(
    provider: LLMProvider, draft: Draft, *, flush_s: float = 0.0
) -> AsyncIterator[str | WriteResponse]:
    """Yield the report's text in pieces, then the complete `WriteResponse` (whose report is
    the pieces joined).

    The model's deltas go out batched, at most one piece per `flush_s` and the first at once
    (`podcrew_core.runtime.batching`); text held back when the model fails still goes out
    before the failure. `flush_s=0` yields every delta as it comes.
    """
    async with contextlib.aclosing(batch_deltas(_report(provider, draft), flush_s)) as pieces:
        async for piece in pieces:
            yield piece


async def _report(provider: LLMProvider, draft: Draft) -> AsyncIterator[str | WriteResponse]:
    """The model's deltas, the source list after them, then the whole `WriteResponse`."""
    parts: list[str] = []
    final: LLMResponse | None = None
    async for event in provider.stream(draft.request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
            yield event.text
        elif isinstance(event, StreamEnd):
            final = event.response
    if final is None:
        raise LLMError("the model's stream ended without a final message")
    body = "".join(parts)
    tail = ("" if body.endswith("\n") else "\n") + sources_section(draft.sources)
    if tail:
        yield tail
    yield WriteResponse(
        report=body + tail, sources=draft.sources, usage=final.usage, model=final.model
    )
