"""Report composition: the streamed pieces add up to the report whatever the coalescing."""

from __future__ import annotations

import json
import re
import types
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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class ScriptedProvider:
    """Streams `DELTAS`, the clock advancing `gaps[i]` seconds before delta i arrives."""

    name = "scripted"

    def __init__(self, clock: Clock, gaps: list[float], fail_after: int | None = None) -> None:
        self.clock = clock
        self.gaps = gaps
        self.fail_after = fail_after

    async def complete(self, request: LLMRequest) -> LLMResponse:
        raise NotImplementedError

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        for i, (text, gap) in enumerate(zip(DELTAS, self.gaps, strict=True)):
            if i == self.fail_after:
                raise LLMUnavailable("the LLM stream broke: RemoteProtocolError")
            self.clock.now += gap
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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(compose, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


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
) -> tuple[list[str], WriteResponse | None]:
    pieces: list[str] = []
    result: WriteResponse | None = None
    async for item in compose.write_stream(provider, _draft(), flush_s=flush_s):
        if isinstance(item, WriteResponse):
            result = item
        else:
            pieces.append(item)
    return pieces, result


async def test_deltas_are_coalesced_into_one_piece_per_interval(clock: Clock) -> None:
    # Four deltas per interval (binary fractions, so the sums are exact), then a pause.
    gaps = [0.0] + [1 / 64] * 10 + [0.25]
    pieces, result = await _collect(ScriptedProvider(clock, gaps), flush_s=4 / 64)
    assert result is not None
    assert "".join(pieces) == result.report  # the same text, in fewer pieces
    assert result.report.startswith("".join(DELTAS))
    assert pieces[0] == DELTAS[0]  # the first delta is not held back
    assert pieces[1] == "".join(DELTAS[1:5])  # one interval after the first piece
    assert pieces[2] == "".join(DELTAS[5:9])
    assert pieces[3] == "".join(DELTAS[9:12])  # held back until the next delta came
    assert pieces[4].startswith("\n\n## Sources")  # the tail: the source list
    assert len(pieces) == 5
    assert result.usage.output_tokens == 12


async def test_the_held_back_text_is_flushed_with_the_tail(clock: Clock) -> None:
    pieces, result = await _collect(ScriptedProvider(clock, [0.001] * 12), flush_s=0.05)
    assert result is not None
    assert pieces == [DELTAS[0], "".join(DELTAS[1:]) + result.report.removeprefix("".join(DELTAS))]


async def test_no_interval_yields_every_delta(clock: Clock) -> None:
    pieces, result = await _collect(ScriptedProvider(clock, [0.0] * 12), flush_s=0.0)
    assert result is not None
    assert pieces[:-1] == DELTAS
    assert "".join(pieces) == result.report


async def test_text_held_back_still_goes_out_before_a_failure(clock: Clock) -> None:
    provider = ScriptedProvider(clock, [0.001] * 12, fail_after=5)
    pieces: list[str | WriteResponse] = []

    async def read() -> None:
        async for item in compose.write_stream(provider, _draft(), flush_s=0.05):
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
