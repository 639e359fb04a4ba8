"""The offline model answers from what a request offers: tools, schemas, the forced choice,
the conversation and its tool results. Every request here is built from JSON schemas and
plain data, the way any application would call it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from podcrew_core.contracts.errors import InvalidModelOutput
from podcrew_core.contracts.schemas import MAX_QUESTION_CHARS, FindingsReport, Plan
from podcrew_core.llm import (
    LLMRequest,
    Message,
    Stage,
    StreamEnd,
    TextBlock,
    TextDelta,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    output_tool,
    structured,
)
from podcrew_core.llm.offline import NOTHING_TO_ADD, OfflineProvider, respond
from podcrew_core.llm.types import OutputBlock


class Lookup(BaseModel):
    terms: str = Field(min_length=1, max_length=40)
    limit: int = Field(default=3, ge=1)


class Visit(BaseModel):
    address: str = Field(json_schema_extra={"format": "uri"})


class Origin(BaseModel):
    key: str
    name: str
    link: str | None = None


class Fact(BaseModel):
    statement: str = Field(min_length=1)
    origin: Origin


class Report(BaseModel):
    facts: list[Fact] = Field(max_length=12)


class Outline(BaseModel):
    parts: list[str] = Field(min_length=2, max_length=6)


class Settings(BaseModel):
    mode: Literal["fast", "slow"]
    level: int = Field(gt=2)
    ratio: float = Field(ge=0.5)
    on: bool
    nested: Origin
    tags: list[str] = Field(default_factory=list)
    limits: list[int] = Field(min_length=2)


def tool(name: str, model: type[BaseModel]) -> ToolSpec:
    return ToolSpec(
        name=name, description=f"The {name} tool.", input_schema=model.model_json_schema()
    )


LOOKUP, VISIT, REPORT = tool("lookup", Lookup), tool("visit", Visit), tool("report", Report)


def request(
    content: str, tools: Sequence[ToolSpec] = (), choice: ToolChoice | None = None
) -> LLMRequest:
    return LLMRequest(
        stage=Stage.RESEARCH,
        model="m",
        system="You help.",
        messages=[Message(role="user", content=content)],
        tools=list(tools),
        tool_choice=choice,
    )


def data(**fields: Any) -> str:
    return json.dumps(fields)


def then(first: LLMRequest, reply: list[OutputBlock], results: list[ToolResultBlock]) -> LLMRequest:
    """`first` continued by the model's `reply` and the tools' `results`."""
    return first.model_copy(
        update={
            "messages": [
                *first.messages,
                Message(role="assistant", content=list(reply)),
                Message(role="user", content=list(results)),
            ]
        }
    )


def forced(name: str) -> ToolChoice:
    return ToolChoice(type="tool", name=name)


def inputs(blocks: list[OutputBlock]) -> list[dict[str, Any]]:
    """The inputs of the tool calls among `blocks`, in order."""
    return [b.input for b in blocks if isinstance(b, ToolUseBlock)]


def last_call_id(blocks: list[OutputBlock]) -> str:
    call = blocks[-1]
    assert isinstance(call, ToolUseBlock)
    return call.id


@pytest.mark.parametrize(
    "model", [Lookup, Visit, Report, Outline, Settings, Fact, Plan, FindingsReport]
)
def test_a_forced_tool_gets_input_that_satisfies_its_schema(model: type[BaseModel]) -> None:
    blocks, stop = respond(request("Anything at all.", [tool("t", model)], forced("t")))
    assert stop == "tool_use"
    [call] = blocks
    assert isinstance(call, ToolUseBlock) and call.name == "t"
    model.model_validate(call.input)


def test_a_forced_call_takes_named_values_from_the_data_and_defaults() -> None:
    blocks, _ = respond(request(data(terms="lazy iterators", other=1), [LOOKUP], forced("lookup")))
    assert inputs(blocks) == [{"terms": "lazy iterators", "limit": 3}]


@pytest.mark.parametrize(
    ("question", "most", "expected"),
    [
        ("How do generators work?", 6, 3),
        ("How do generators work and how do coroutines differ and what is asyncio?", 6, 3),
        (
            "Explain the decorators; explain the closures; explain the scopes; explain the modules",
            3,
            3,
        ),
        (
            "Explain the decorators; explain the closures; explain the scopes; explain the modules",
            6,
            4,
        ),
        ("What is Python?", 2, 2),
    ],
)
def test_a_list_of_strings_is_the_subject_split_within_its_bounds(
    question: str, most: int, expected: int
) -> None:
    schema = Outline.model_json_schema()
    schema["properties"]["parts"]["maxItems"] = most
    outline = ToolSpec(name="outline", description="d", input_schema=schema)
    blocks, _ = respond(request(data(question=question), [outline], forced("outline")))
    [made] = inputs(blocks)
    parts = made["parts"]
    assert len(parts) == expected and len(set(parts)) == expected
    assert all(p.endswith("?") for p in parts)
    if ";" in question:
        assert parts[:3] == [
            "Explain the decorators?",
            "Explain the closures?",
            "Explain the scopes?",
        ]


LONG_CLAUSE = " ".join(["why does the garbage collector of a python generator run"] * 70)


@pytest.mark.parametrize(
    "question",
    [
        ("What " + LONG_CLAUSE)[: MAX_QUESTION_CHARS - 1] + "?",
        ("W" * (MAX_QUESTION_CHARS - 1)) + "?",
        "How do generators work and " + ("why " * 2000)[: MAX_QUESTION_CHARS - 40] + "?",
    ],
)
def test_a_question_the_api_accepts_is_planned_within_the_plans_schema(question: str) -> None:
    assert len(question) <= MAX_QUESTION_CHARS
    plan = tool("submit_plan", Plan)
    blocks, _ = respond(request(data(question=question), [plan], forced("submit_plan")))
    [made] = inputs(blocks)
    Plan.model_validate(made)
    assert len(set(made["sub_questions"])) == len(made["sub_questions"])


def test_list_items_stay_within_their_max_length() -> None:
    schema = Outline.model_json_schema()
    schema["properties"]["parts"]["items"]["maxLength"] = 40
    outline = ToolSpec(name="outline", description="d", input_schema=schema)
    question = "How do Python generators keep their local state between two calls?"
    blocks, _ = respond(request(data(question=question), [outline], forced("outline")))
    [made] = inputs(blocks)
    assert made["parts"][0] == "How do Python generators keep their?"
    assert all(len(p) <= 40 and p.endswith("?") for p in made["parts"])


def test_function_tools_are_called_first_with_the_subject() -> None:
    first = request(data(topic="What is a generator?", context="Q?"), [LOOKUP, VISIT, REPORT])
    blocks, stop = respond(first)
    assert stop == "tool_use"
    text, call = blocks
    assert isinstance(text, TextBlock) and text.text == "Calling lookup."
    # No URL in the conversation: the tool that needs one is not called.
    assert isinstance(call, ToolUseBlock)
    assert (call.name, call.input) == ("lookup", {"terms": "What is a generator?", "limit": 3})
    assert call.id.startswith("toolu_") and respond(first)[0][1] == call  # deterministic


def test_a_tool_that_needs_a_url_is_called_with_the_one_in_the_conversation() -> None:
    first = request("Read https://example.org/gen.html please", [LOOKUP, VISIT])
    blocks, _ = respond(first)
    calls = {b.name: b.input for b in blocks if isinstance(b, ToolUseBlock)}
    assert calls["visit"] == {"address": "https://example.org/gen.html"}
    assert calls["lookup"]["terms"] == "Read https://example.org/gen.html please"


def test_after_tool_results_the_output_tool_gets_items_from_the_records_that_fit() -> None:
    first = request(data(topic="What does a generator yield?"), [LOOKUP, REPORT])
    reply, _ = respond(first)
    hit = {
        "origin": {"key": "a", "name": "A", "link": None},
        "body": "Short one. A generator function yields values one at a time when asked.",
    }
    results = {
        "matches": [
            hit,
            {"origin": {"key": "b", "name": "B"}, "body": "Too short."},  # says nothing
            {"body": "No origin here, so nothing to cite it by in a report."},
            dict(hit),  # the same origin again
            {
                "origin": {"key": "c", "name": "C"},
                "body": "Generators yield lazy iterators of data.",
            },
        ]
    }
    second = then(
        first,
        reply,
        [
            ToolResultBlock(tool_use_id=last_call_id(reply), content=json.dumps(results)),
            ToolResultBlock(tool_use_id="toolu_x", content="{}", is_error=True),
        ],
    )
    blocks, stop = respond(second)
    assert stop == "tool_use"
    [submit] = blocks
    assert isinstance(submit, ToolUseBlock) and submit.name == "report"
    report = Report.model_validate(submit.input)
    assert [f.origin.key for f in report.facts] == ["a", "c"]
    assert report.facts[0].statement == (
        "A generator function yields values one at a time when asked."
    )


def test_output_items_are_at_most_four_and_within_max_items() -> None:
    records = [
        {"origin": {"key": str(n), "name": "N"}, "body": f"Fact number {n} is a long enough one."}
        for n in range(9)
    ]
    first = request(data(topic="numbers"), [LOOKUP, REPORT])
    reply, _ = respond(first)
    results = [ToolResultBlock(tool_use_id=last_call_id(reply), content=json.dumps(records))]
    blocks, _ = respond(then(first, reply, results))
    assert [len(made["facts"]) for made in inputs(blocks)] == [4]

    one = Report.model_json_schema()
    one["properties"]["facts"]["maxItems"] = 1
    narrow = ToolSpec(name="report", description="d", input_schema=one)
    blocks, _ = respond(then(first, reply, results).model_copy(update={"tools": [narrow]}))
    assert [len(made["facts"]) for made in inputs(blocks)] == [1]


def test_with_every_function_tool_called_and_no_output_tool_it_answers_text() -> None:
    first = request("hello", [LOOKUP])
    reply, _ = respond(first)
    results = [ToolResultBlock(tool_use_id=last_call_id(reply), content="plain text")]
    blocks, stop = respond(then(first, reply, results))
    assert stop == "end_turn"
    assert blocks == [TextBlock(text=NOTHING_TO_ADD)]


def test_tool_choice_any_answers_with_tool_calls_only() -> None:
    any_tool = ToolChoice(type="any")
    blocks, stop = respond(request("no url here", [VISIT, LOOKUP], any_tool))
    assert stop == "tool_use"
    assert [b.name for b in blocks if isinstance(b, ToolUseBlock)] == ["lookup"]
    assert all(isinstance(b, ToolUseBlock) for b in blocks)
    # Nothing it would call unprompted: the first tool is forced, the URL made up.
    blocks, _ = respond(request("no url here", [VISIT], any_tool))
    assert inputs(blocks) == [{"address": "https://example.com/"}]


DOCUMENT = {
    "title": "How do generators work?",
    "parts": [
        {
            "heading": "What is a generator?",
            "points": [
                {"text": "A generator yields values.", "n": 1, "origin": "A"},
                {"text": "It pauses at each yield.", "n": 2, "origin": "B"},
            ],
        },
        {"heading": "Where are they used?", "points": []},
        {
            "heading": "What do generators yield?",
            "points": [
                {"text": "A generator yields values.", "n": 1, "origin": "A"},
                {"text": "Values come one at a time.", "n": 3, "origin": "C"},
            ],
        },
        {
            "heading": "What are generators?",
            "points": [{"text": "It pauses at each yield.", "n": 2}],
        },
    ],
    "left_out": ["Why are they fast?"],
}


def test_with_no_tools_it_writes_the_data_as_a_cited_report() -> None:
    blocks, stop = respond(request(json.dumps(DOCUMENT)))
    assert stop == "end_turn"
    [text] = blocks
    assert isinstance(text, TextBlock)
    assert text.text == (
        "# How do generators work?\n\n"
        "This report answers the question in 4 parts, drawing on 3 sources.\n\n"
        "## What is a generator?\n\n"
        "- A generator yields values. [1]\n"
        "- It pauses at each yield. [2]\n\n"
        "## Where are they used?\n\n"
        "Nothing relevant was found for this part.\n\n"
        "## What do generators yield?\n\n"
        "- Values come one at a time. [3]\n\n"
        "See also [1] above.\n\n"
        "## What are generators?\n\n"
        "This part is answered above: [2].\n\n"
        "## Left out\n\n"
        "- Why are they fast?\n"
    )


def test_a_sentence_two_passages_share_is_written_once() -> None:
    document = {
        "title": "How does a loop's else clause work?",
        "parts": [
            {
                "heading": "What does break do?",
                "points": [
                    {"text": "Break skips the else clause. Then the for loop ends.", "n": 1},
                    {"text": "Break skips the else clause. Then the while loop ends.", "n": 2},
                    {"text": "Break skips the else clause.", "n": 3},
                ],
            }
        ],
    }
    [text], _ = respond(request(json.dumps(document)))
    assert isinstance(text, TextBlock)
    assert text.text.count("Break skips the else clause.") == 1
    assert "- Then the while loop ends. [2]" in text.text
    assert "See also [3] above." in text.text


def test_a_passage_about_something_else_gives_no_finding() -> None:
    # A search answers with its best passages even when none is relevant: a question about
    # France gets passages about Python, which must not become cited findings.
    first = request(data(topic="What is the capital city of France?"), [LOOKUP, REPORT])
    reply, _ = respond(first)
    results = {
        "matches": [
            {
                "origin": {"key": "a", "name": "A"},
                "body": "The LATIN CAPITAL LETTER C WITH CEDILLA is one precomposed character.",
            },
            {
                "origin": {"key": "b", "name": "B"},
                "body": "Paris is the capital of France and its largest city by far.",
            },
        ]
    }
    second = then(
        first,
        reply,
        [ToolResultBlock(tool_use_id=last_call_id(reply), content=json.dumps(results))],
    )
    [submit], _ = respond(second)
    assert isinstance(submit, ToolUseBlock)
    assert [f.origin.key for f in Report.model_validate(submit.input).facts] == ["b"]


def test_a_passage_s_own_footnote_marks_are_not_quoted_as_citations() -> None:
    from podcrew_core.llm.offline.writing import excerpt

    text = "Coroutines suspend at each await expression. [1] The exception is propagated upward."
    assert "[1]" not in excerpt(text, "How do coroutines suspend at an await expression?")


def test_with_no_data_to_write_it_has_nothing_to_add() -> None:
    assert respond(request("Write about generators."))[0] == [TextBlock(text=NOTHING_TO_ADD)]
    assert respond(request(data(topic="t")))[0] == [TextBlock(text=NOTHING_TO_ADD)]


async def test_structured_output_validates_and_reports_usage() -> None:
    provider = OfflineProvider()
    outline = output_tool("outline", "Submit the outline.", Outline)
    result, response = await structured(
        provider, request(data(question="How do generators work?")), outline, Outline
    )
    assert 2 <= len(result.parts) <= 6
    assert response.usage.llm_calls == 1
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_structured_output_that_does_not_validate_is_the_models_fault() -> None:
    # The tool's schema is an outline; the caller expects a report: the input cannot fit.
    mismatched = output_tool("report", "Submit.", Outline)
    with pytest.raises(InvalidModelOutput):
        await structured(OfflineProvider(), request(data(question="Q?")), mismatched, Report)


async def test_the_stream_is_the_answer_in_pieces() -> None:
    events = [e async for e in OfflineProvider().stream(request(json.dumps(DOCUMENT)))]
    assert isinstance(events[-1], StreamEnd)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == events[-1].response.text()
    assert "- A generator yields values. [1]" in events[-1].response.text()


class Search(BaseModel):
    question: str = Field(min_length=1, max_length=400)


def test_two_searches_are_called_together_and_the_report_draws_on_both() -> None:
    """Offered a search of its own documents and a web search, it calls both at once, as a
    model does; its report takes from each in turn, read without the delimiters that mark
    fetched text, so a web page is cited even when the first search filled the list (every
    record here is as relevant as the others: relevance would order them first)."""
    web = tool("web", Search)
    first = request(data(topic="How often is the quibbler recalibrated?"), [LOOKUP, web, REPORT])
    reply, stop = respond(first)
    assert stop == "tool_use"
    calls = {b.name: b.input for b in reply if isinstance(b, ToolUseBlock)}
    assert calls == {
        "lookup": {"terms": "How often is the quibbler recalibrated?", "limit": 3},
        "web": {"question": "How often is the quibbler recalibrated?"},
    }
    documents = [
        {
            "origin": {"key": f"doc{n}", "name": "D"},
            "body": f"Document {n} says the quibbler is recalibrated by hand, in step {n}.",
        }
        for n in range(5)
    ]
    page = {
        "origin": {"key": "https://q.example/page", "name": "Quibbler"},
        "snippet": "<untrusted>\nThe quibbler is recalibrated every ninety days by a "
        "technician.\n</untrusted>",
    }
    ids = [b.id for b in reply if isinstance(b, ToolUseBlock)]
    results = [
        ToolResultBlock(tool_use_id=ids[0], content=json.dumps({"matches": documents})),
        ToolResultBlock(tool_use_id=ids[1], content=json.dumps({"results": [page]})),
    ]
    blocks, _ = respond(then(first, reply, results))
    report = Report.model_validate(inputs(blocks)[0])
    assert [f.origin.key for f in report.facts] == [
        "doc0",
        "https://q.example/page",
        "doc1",
        "doc2",
    ]
    assert report.facts[1].statement == (
        "The quibbler is recalibrated every ninety days by a technician."
    )
