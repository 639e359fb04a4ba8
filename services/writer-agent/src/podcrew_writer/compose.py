"""Report composition: number the sources, let the model write, append the source list.

The numbered source list is built here (`podcrew_core.contracts.citations`), not by the
model, so every `[n]` in the report points at a real source whatever the model writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from podcrew_core.contracts.citations import number_sources, sources_section
from podcrew_core.contracts.errors import LLMError
from podcrew_core.contracts.schemas import SourceRef, WriteRequest, WriteResponse
from podcrew_core.llm import LLMProvider, LLMRequest, LLMResponse, Message, Stage
from podcrew_core.llm.prompts import PromptSet
from podcrew_core.llm.types import StreamEnd, TextDelta
from podcrew_core.runtime.batching import batch_deltas

SYSTEM_PROMPT = (
    "You are podcrew's writer. The user message is a JSON document: the question, its "
    "sections (each a sub-question with numbered findings) and the sub-questions that could "
    "not be researched. Write a concise, well-structured markdown report that answers the "
    "question using only those findings. Cite every claim with the number of its finding in "
    "square brackets, like [2]. Do not invent sources. If some parts could not be "
    "researched, say so plainly."
)
# Everything the writer sends a model; every response says which version wrote it.
WRITER_PROMPTS = PromptSet("writer", {"system": SYSTEM_PROMPT})


@dataclass(frozen=True)
class Draft:
    request: LLMRequest
    sources: list[SourceRef]


def write_message(body: WriteRequest) -> tuple[str, list[SourceRef]]:
    """The writer's input as a JSON document, each finding with its source's number; and
    the numbered sources."""
    sections, sources = number_sources(body.sections)
    payload = {
        "question": body.question,
        "sections": [
            {
                "sub_question": section.sub_question,
                "findings": [
                    {"claim": f.claim, "n": n, "source_title": f.source.title}
                    for n, f in section.findings
                ],
            }
            for section in sections
        ],
        "not_researched": body.unresearched,
    }
    return json.dumps(payload, ensure_ascii=False), sources


def prepare(body: WriteRequest, model: str, max_tokens: int) -> Draft:
    """The model's request for `body`, and the sources its `[n]` refer to."""
    message, sources = write_message(body)
    request = LLMRequest(
        stage=Stage.WRITE,
        model=model,
        system=WRITER_PROMPTS.texts["system"],
        messages=[Message(role="user", content=message)],
        max_tokens=max_tokens,
    )
    return Draft(request=request, sources=sources)


async def write(provider: LLMProvider, draft: Draft) -> WriteResponse:
    response = await provider.complete(draft.request)
    return WriteResponse(
        report=response.text().rstrip() + "\n" + sources_section(draft.sources),
        sources=draft.sources,
        usage=response.usage,
        model=response.model,
        prompt_version=WRITER_PROMPTS.version,
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
        report=body + tail,
        sources=draft.sources,
        usage=final.usage,
        model=final.model,
        prompt_version=WRITER_PROMPTS.version,
    )
