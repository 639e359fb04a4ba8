"""Report composition: the streamed pieces add up to the report whatever the batching."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator

import pytest

from podcrew_core.contracts.citations import sources_section
from podcrew_core.contracts.errors import LLMError, LLMUnavailable
from podcrew_core.contracts.schemas import (
    Finding,
    ResearchedSection,
    Source,
    Usage,
    WriteRequest,
    WriteResponse,
)
from podcrew_core.llm import LLMRequest, LLMResponse, TextBlock
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.llm.types import StreamEnd, StreamEvent, TextDelta
from podcrew_writer import compose

DELTAS = [f"word{i} " for i in range(12)]


class ScriptedProvider:
    """Streams `DELTAS`, waiting `gaps[i]` seconds before delta i; fails before delta
    `fail_after` if given."""

    name = "scripted"

    def __init__(self, gaps: list[float], fail_after: int | None = None) -> None:
        self.gaps = gaps
        self.fail_after = fail_after

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raise NotImplementedError

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        for i, (text, gap) in enumerate(zip(DELTAS, self.gaps, strict=True)):
            if i == self.fail_after:
                raise LLMUnavailable("the LLM stream broke: RemoteProtocolError")
            await asyncio.sleep(gap)
            yield TextDelta(text=text)
        yield StreamEnd(
            response=LLMResponse(
                model="m",
                content=[TextBlock(text="".join(DELTAS))],
                stop_reason="end_turn",
                usage=Usage(input_tokens=5, output_tokens=12, llm_calls=1),
            )
        )

    async def aclose(self) -> None:
        return None


def _draft() -> compose.Draft:
    source = Source(id="kb:generators#1", title="Generators", url=None)
    body = WriteRequest(
        run_id="run-1",
        question="How do generators work?",
        sections=[
            ResearchedSection(
                sub_question="What is a generator?",
                findings=[Finding(claim="A generator yields values.", source=source)],
            )
        ],
    )
    return compose.prepare(body, "m", 1024)


async def _collect(
    provider: ScriptedProvider, flush_s: float
) -> tuple[list[tuple[float, str]], WriteResponse | None]:
    """The pieces, each with the time it came (seconds from the start), and the result."""
    pieces: list[tuple[float, str]] = []
    result: WriteResponse | None = None
    started = time.monotonic()
    async for item in compose.write_stream(provider, _draft(), flush_s=flush_s):
        if isinstance(item, WriteResponse):
            result = item
        else:
            pieces.append((time.monotonic() - started, item))
    return pieces, result


async def test_deltas_are_batched_into_one_piece_per_interval() -> None:
    # A delta every 20 ms, then a pause longer than the interval before the last.
    pieces, result = await _collect(ScriptedProvider([0.0] + [0.02] * 10 + [0.3]), flush_s=0.07)
    texts = [text for _, text in pieces]
    assert result is not None
    assert "".join(texts) == result.report  # the same text, in fewer pieces
    assert result.report.startswith("".join(DELTAS))
    assert texts[0] == DELTAS[0]  # the first delta is not held back
    assert 3 <= len(texts) <= 6  # ~one per 70 ms over 200 ms, then the last delta and the tail
    # What waited for its interval went out when the interval ended, during the pause,
    # not with the last delta.
    assert texts[-1] == DELTAS[-1] + result.report.removeprefix("".join(DELTAS))
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(pieces)]
    assert all(gap >= 0.065 for gap in gaps[:-1]), gaps
    assert result.usage.output_tokens == 12


async def test_the_held_back_text_is_flushed_with_the_tail() -> None:
    pieces, result = await _collect(ScriptedProvider([0.001] * 12), flush_s=5.0)
    assert result is not None
    tail = result.report.removeprefix("".join(DELTAS))
    assert [text for _, text in pieces] == [DELTAS[0], "".join(DELTAS[1:]) + tail]


async def test_no_interval_yields_every_delta() -> None:
    pieces, result = await _collect(ScriptedProvider([0.0] * 12), flush_s=0.0)
    assert result is not None
    assert [text for _, text in pieces][:-1] == DELTAS
    assert "".join(text for _, text in pieces) == result.report


async def test_text_held_back_still_goes_out_before_a_failure() -> None:
    provider = ScriptedProvider([0.001] * 12, fail_after=5)
    pieces: list[str | WriteResponse] = []

    async def read() -> None:
        async for item in compose.write_stream(provider, _draft(), flush_s=5.0):
            pieces.append(item)

    with pytest.raises(LLMError, match="stream broke"):
        await read()
    assert pieces == [DELTAS[0], "".join(DELTAS[1:5])]


async def test_the_model_reads_the_findings_by_the_numbers_the_sources_list_gives() -> None:
    a = Source(id="kb:a#1", title="A")
    b = Source(id="https://example.org/b", title="B", url="https://example.org/b")
    body = WriteRequest(
        run_id="run-1",
        question="Q?",
        sections=[
            ResearchedSection(
                sub_question="S1?",
                findings=[Finding(claim="c1", source=b), Finding(claim="c2", source=a)],
            ),
            ResearchedSection(sub_question="S2?", findings=[Finding(claim="c3", source=b)]),
        ],
        unresearched=["U?"],
    )
    draft = compose.prepare(body, "m", 1024)
    [message] = draft.request.messages
    assert isinstance(message.content, str)
    assert json.loads(message.content) == {
        "question": "Q?",
        "sections": [
            {
                "sub_question": "S1?",
                "findings": [
                    {"claim": "c1", "n": 1, "source_title": "B"},
                    {"claim": "c2", "n": 2, "source_title": "A"},
                ],
            },
            {"sub_question": "S2?", "findings": [{"claim": "c3", "n": 1, "source_title": "B"}]},
        ],
        "not_researched": ["U?"],
    }
    assert [(ref.number, ref.source) for ref in draft.sources] == [(1, b), (2, a)]

    response = await compose.write(OfflineProvider(), draft)
    assert response.report.endswith(sources_section(draft.sources))
    assert "- c3 [1]" in response.report and "U?" in response.report
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", response.report)}
    assert cited == {ref.number for ref in response.sources}


async def test_the_report_names_the_writer_prompt_set_that_wrote_it() -> None:
    _, streamed = await _collect(ScriptedProvider(gaps=[0.0] * len(DELTAS)), 0.0)
    assert streamed is not None
    assert streamed.prompt_version == compose.WRITER_PROMPTS.version
    assert compose.WRITER_PROMPTS.version.startswith("writer:")
    assert _draft().request.system == compose.WRITER_PROMPTS.texts["system"]
