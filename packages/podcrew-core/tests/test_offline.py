"""The offline model answers podcrew's conversations the way a real model would."""

from __future__ import annotations

import json

import pytest

from podcrew_core.contracts.errors import InvalidModelOutput
from podcrew_core.contracts.schemas import FindingsReport, Plan
from podcrew_core.llm import (
    LLMRequest,
    Message,
    Stage,
    StreamEnd,
    TextDelta,
    ToolResultBlock,
    ToolSpec,
    output_tool,
    structured,
)
from podcrew_core.llm.offline import OfflineProvider, plan, respond
from podcrew_core.llm.protocol import (
    FINDINGS_TOOL,
    KB_SEARCH_SPEC,
    KB_SEARCH_TOOL,
    PLAN_TOOL,
    plan_message,
    research_message,
    write_message,
)


def _request(stage: Stage, content: str | list, tools: list[ToolSpec] | None = None) -> LLMRequest:
    return LLMRequest(
        stage=stage,
        model="m",
        system="s",
        messages=[Message(role="user", content=content)],
        tools=tools or [],
    )


@pytest.mark.parametrize(
    ("question", "limit", "expected"),
    [
        ("How do generators work?", 4, 3),
        ("How do generators work and how do coroutines differ and what is asyncio?", 6, 3),
        ("What is Python?", 2, 2),
        ("Explain decorators; explain closures; explain scopes; explain modules", 3, 3),
    ],
)
def test_plan_respects_bounds(question: str, limit: int, expected: int) -> None:
    subs = plan(question, limit)
    assert len(subs) == expected
    assert len(set(subs)) == len(subs)
    assert all(s.endswith("?") for s in subs)


async def test_structured_plan_validates() -> None:
    provider = OfflineProvider()
    request = _request(Stage.PLAN, plan_message("How do Python generators work?", 4))
    result, response = await structured(
        provider, request, output_tool(PLAN_TOOL, "plan", Plan), Plan
    )
    assert 2 <= len(result.sub_questions) <= 4
    assert response.usage.llm_calls == 1
    assert response.usage.input_tokens > 0


async def test_structured_rejects_output_that_does_not_validate() -> None:
    provider = OfflineProvider()
    # Forcing the findings tool on a planning conversation: the model's reply has no findings
    # list shaped like `Plan`, so validation must fail loudly.
    request = _request(Stage.PLAN, plan_message("How do Python generators work?", 4))
    with pytest.raises(InvalidModelOutput):
        await structured(provider, request, output_tool(FINDINGS_TOOL, "f", Plan), Plan)


def test_research_searches_first_then_submits_findings_from_results() -> None:
    findings_tool = output_tool(FINDINGS_TOOL, "findings", FindingsReport)
    tools = [KB_SEARCH_SPEC, findings_tool]
    first = _request(Stage.RESEARCH, research_message("What is a generator?", "Q?"), tools)
    blocks, stop = respond(first)
    assert stop == "tool_use"
    call = blocks[-1]
    assert call.type == "tool_use" and call.name == KB_SEARCH_TOOL
    assert call.input["query"] == "What is a generator?"

    hits = {
        "hits": [
            {
                "source": {"id": "kb:a#1", "title": "A"},
                "text": "Unrelated. A generator yields values.",
            },
            {"source": {"id": "kb:b#1", "title": "B"}, "text": "Generators are lazy iterators."},
        ]
    }
    second = first.model_copy(
        update={
            "messages": [
                *first.messages,
                Message(role="assistant", content=blocks),
                Message(
                    role="user",
                    content=[ToolResultBlock(tool_use_id=call.id, content=json.dumps(hits))],
                ),
            ]
        }
    )
    blocks, stop = respond(second)
    assert stop == "tool_use"
    assert blocks[0].name == FINDINGS_TOOL
    report = FindingsReport.model_validate(blocks[0].input)
    assert [f.source.id for f in report.findings] == ["kb:a#1", "kb:b#1"]
    assert report.findings[0].claim.startswith("A generator yields values.")


async def test_writer_streams_a_cited_report() -> None:
    payload = {
        "question": "Q?",
        "sections": [{"sub_question": "S?", "findings": [{"n": 1, "claim": "C."}]}],
        "unresearched": ["U?"],
    }
    provider = OfflineProvider()
    events = [e async for e in provider.stream(_request(Stage.WRITE, write_message(payload)))]
    assert isinstance(events[-1], StreamEnd)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == events[-1].response.text()
    assert "- C. [1]" in text
    assert "U?" in text
    assert len([e for e in events if isinstance(e, TextDelta)]) > 1
