"""The research loop against the offline model and scripted models."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import DeadlineExceeded, InvalidModelOutput, ToolError
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    OutputBlock,
    StopReason,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from podcrew_core.runtime.scope import open_hop
from podcrew_research.loop import (
    CLOSING_PROMPT,
    FINDINGS_TOOL,
    RESEARCH_PROMPTS,
    LoopLimits,
    Researcher,
)
from podcrew_research.tools import Tool, ToolOutput
from podcrew_research.tools.fetch_url import (
    EgressPolicy,
    Fetcher,
    create_fetch_client,
    fetch_url_tool,
)
from podcrew_research.tools.kb_search import (
    KB_SEARCH_SPEC,
    KnowledgeBase,
    kb_search_tool,
    source_of,
)

SUB_QUESTION = "How do generators yield values?"
QUESTION = "How do Python generators work?"
MODEL = "test-model"

Reply = tuple[list[OutputBlock], StopReason]


class ScriptedProvider:
    """Answers each call with the next scripted reply (or what a function makes of the
    request), recording the requests."""

    name = "scripted"

    def __init__(self, *replies: Reply | Callable[[LLMRequest], Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        reply = self.replies.pop(0)
        content, stop = reply(request) if callable(reply) else reply
        return LLMResponse(
            model=request.model,
            content=content,
            stop_reason=stop,
            usage=Usage(input_tokens=100, output_tokens=10, llm_calls=1),
        )

    async def stream(self, request: LLMRequest) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def tool_use(name: str, payload: dict[str, Any], id_: str = "toolu_1") -> ToolUseBlock:
    return ToolUseBlock(id=id_, name=name, input=payload)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0


@pytest.fixture
async def fetch_tool() -> Any:
    """fetch_url wired to a transport that fails the test if anything is sent."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected fetch of {request.url}")

    policy = EgressPolicy()
    async with create_fetch_client(policy, httpx.MockTransport(refuse)) as client:
        yield fetch_url_tool(Fetcher(client, policy))


async def test_offline_model_searches_once_then_submits_kb_findings(
    kb: KnowledgeBase, recording_provider: Any, fetch_tool: Tool
) -> None:
    researcher = Researcher(recording_provider, [kb_search_tool(kb), fetch_tool], model=MODEL)
    before = counter("podcrew_tool_calls", tool="kb_search", outcome="ok")

    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    assert [(c.name, c.input, c.ok, c.results) for c in result.tool_calls] == [
        ("kb_search", {"query": SUB_QUESTION, "k": 5}, True, 5)
    ]
    assert result.steps == 2
    assert result.usage.llm_calls == 2
    assert result.usage.total_tokens > 0
    assert result.model == MODEL
    assert result.findings
    assert all(f.source.id.startswith("kb:") and f.source.url is None for f in result.findings)
    assert any("yield" in f.source.id for f in result.findings)
    # Each cites a chunk: the file and the anchor of its section.
    cited = [f.source.id for f in result.findings]
    assert all(re.fullmatch(r"kb:python-docs/[a-z-]+\.md#[a-z0-9~-]+", i) for i in cited), cited
    assert counter("podcrew_tool_calls", tool="kb_search", outcome="ok") == before + 1
    # The model was offered both tools plus the findings tool, and chose freely.
    first = recording_provider.requests[0]
    # What to research reaches the model as a JSON document.
    assert json.loads(first.messages[0].text()) == {
        "sub_question": SUB_QUESTION,
        "question": QUESTION,
    }
    assert [t.name for t in first.tools] == ["kb_search", "fetch_url", "submit_findings"]
    assert first.tool_choice is not None
    assert first.tool_choice.type == "auto"
    assert "<untrusted>" in first.system


async def test_tool_results_reach_the_model_as_kb_hits_json(
    kb: KnowledgeBase, recording_provider: Any
) -> None:
    researcher = Researcher(recording_provider, [kb_search_tool(kb)], model=MODEL)
    await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    second = recording_provider.requests[1]
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    (result,) = second.messages[2].blocks()
    assert isinstance(result, ToolResultBlock)
    assert not result.is_error
    hits = json.loads(result.content)["hits"]
    assert len(hits) == 5
    assert set(hits[0]) == {"source", "text", "score"}
    assert set(hits[0]["source"]) == {"id", "title", "url"}


async def test_failing_tool_is_reported_to_the_model_and_the_loop_finishes(
    recording_provider: Any,
) -> None:
    async def broken(arguments: dict[str, Any]) -> ToolOutput:
        raise ToolError("the index is offline")

    tool = Tool(spec=KB_SEARCH_SPEC, run=broken)
    researcher = Researcher(recording_provider, [tool], model=MODEL)
    before = counter("podcrew_tool_calls", tool="kb_search", outcome="error")

    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    (call,) = result.tool_calls
    assert (call.name, call.ok, call.results, call.error) == (
        "kb_search",
        False,
        0,
        "the index is offline",
    )
    (block,) = recording_provider.requests[1].messages[2].blocks()
    assert isinstance(block, ToolResultBlock)
    assert block.is_error
    assert block.content == "the index is offline"
    assert result.findings == []
    assert result.steps == 2
    assert counter("podcrew_tool_calls", tool="kb_search", outcome="error") == before + 1


async def test_a_crashing_tool_is_reported_without_its_internals(
    recording_provider: Any,
) -> None:
    async def crashing(arguments: dict[str, Any]) -> ToolOutput:
        raise RuntimeError("secret internal state")

    researcher = Researcher(
        recording_provider, [Tool(spec=KB_SEARCH_SPEC, run=crashing)], model=MODEL
    )
    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    (call,) = result.tool_calls
    assert not call.ok
    assert call.error is not None
    assert "secret" not in call.error


async def test_unknown_tool_is_an_error_result_not_a_crash(kb: KnowledgeBase) -> None:
    provider = ScriptedProvider(
        ([tool_use("shell", {"cmd": "cat /etc/passwd"})], "tool_use"),
        ([tool_use(FINDINGS_TOOL, {"findings": []}, "toolu_2")], "tool_use"),
    )
    researcher = Researcher(provider, [kb_search_tool(kb)], model=MODEL)
    before = counter("podcrew_tool_calls", tool="unknown", outcome="rejected")

    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    (call,) = result.tool_calls
    assert call.name == "shell"
    assert not call.ok
    assert "unknown tool" in (call.error or "")
    (block,) = provider.requests[1].messages[2].blocks()
    assert isinstance(block, ToolResultBlock)
    assert block.is_error
    assert block.tool_use_id == "toolu_1"
    assert counter("podcrew_tool_calls", tool="unknown", outcome="rejected") == before + 1


async def test_parallel_tool_uses_all_get_results_in_one_user_turn(kb: KnowledgeBase) -> None:
    provider = ScriptedProvider(
        (
            [
                tool_use("kb_search", {"query": "generator yield"}, "toolu_a"),
                tool_use("kb_search", {"query": "with statement"}, "toolu_b"),
            ],
            "tool_use",
        ),
        ([tool_use(FINDINGS_TOOL, {"findings": []}, "toolu_c")], "tool_use"),
    )
    result = await Researcher(provider, [kb_search_tool(kb)], model=MODEL).research(
        sub_question=SUB_QUESTION, question=QUESTION
    )

    assert [c.input["query"] for c in result.tool_calls] == ["generator yield", "with statement"]
    blocks = provider.requests[1].messages[2].blocks()
    assert [b.tool_use_id for b in blocks if isinstance(b, ToolResultBlock)] == [
        "toolu_a",
        "toolu_b",
    ]


async def test_token_cap_stops_the_loop(kb: KnowledgeBase, recording_provider: Any) -> None:
    researcher = Researcher(
        recording_provider,
        [kb_search_tool(kb)],
        model=MODEL,
        limits=LoopLimits(max_total_tokens=1),
    )
    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION)

    assert result.usage.llm_calls == 1
    assert len(recording_provider.requests) == 1
    assert result.tool_calls == []
    assert result.findings == []


async def test_step_limit_ends_with_a_forced_findings_call(
    kb: KnowledgeBase, recording_provider: Any
) -> None:
    researcher = Researcher(recording_provider, [kb_search_tool(kb)], model=MODEL)
    result = await researcher.research(sub_question=SUB_QUESTION, question=QUESTION, max_steps=1)

    assert result.steps == 1
    assert result.usage.llm_calls == 2
    assert len(result.tool_calls) == 1
    assert result.findings
    closing = recording_provider.requests[-1]
    assert closing.tool_choice is not None
    assert (closing.tool_choice.type, closing.tool_choice.name) == ("tool", "submit_findings")
    last = closing.messages[-1].blocks()
    assert isinstance(last[0], ToolResultBlock)
    assert isinstance(last[-1], TextBlock)
    assert last[-1].text == CLOSING_PROMPT


async def test_model_that_stops_talking_is_asked_for_findings(kb: KnowledgeBase) -> None:
    hit = source_of(kb.search("generator yield", 1)[0]).model_dump()

    def forced(request: LLMRequest) -> Reply:
        assert request.tool_choice is not None
        assert request.tool_choice.type == "tool"
        payload = {"findings": [{"claim": "Generators yield.", "source": hit}]}
        return [tool_use(FINDINGS_TOOL, payload, "toolu_f")], "tool_use"

    provider = ScriptedProvider(
        ([tool_use("kb_search", {"query": "generator yield", "k": 1})], "tool_use"),
        ([TextBlock(text="I think I am done.")], "end_turn"),
        forced,
    )
    result = await Researcher(provider, [kb_search_tool(kb)], model=MODEL).research(
        sub_question=SUB_QUESTION, question=QUESTION
    )

    assert result.steps == 2
    assert [f.source.id for f in result.findings] == [hit["id"]]
    assert provider.requests[-1].messages[-1].text() == CLOSING_PROMPT
    assert result.usage.llm_calls == 3


async def test_findings_citing_sources_no_tool_returned_are_dropped(kb: KnowledgeBase) -> None:
    hit = source_of(kb.search("generator yield", 1)[0])
    invented = {"id": "kb:made-up#1", "title": "Made up", "url": None}
    real_with_wrong_title = {"id": hit.id, "title": "wrong", "url": None}
    provider = ScriptedProvider(
        ([tool_use("kb_search", {"query": "generator yield", "k": 1})], "tool_use"),
        (
            [
                tool_use(
                    FINDINGS_TOOL,
                    {
                        "findings": [
                            {"claim": "Invented.", "source": invented},
                            {"claim": "Real.", "source": real_with_wrong_title},
                        ]
                    },
                    "toolu_2",
                )
            ],
            "tool_use",
        ),
    )
    result = await Researcher(provider, [kb_search_tool(kb)], model=MODEL).research(
        sub_question=SUB_QUESTION, question=QUESTION
    )

    assert [(f.claim, f.source) for f in result.findings] == [("Real.", hit)]


async def test_invalid_findings_are_invalid_model_output(kb: KnowledgeBase) -> None:
    provider = ScriptedProvider(
        ([tool_use(FINDINGS_TOOL, {"findings": [{"claim": ""}]})], "tool_use"),
    )
    with pytest.raises(InvalidModelOutput):
        await Researcher(provider, [kb_search_tool(kb)], model=MODEL).research(
            sub_question=SUB_QUESTION, question=QUESTION
        )


async def test_research_is_bounded_by_the_deadline_of_the_hop_it_serves(
    kb: KnowledgeBase,
) -> None:
    class Slow(ScriptedProvider):
        async def complete(self, request: LLMRequest) -> LLMResponse:
            await asyncio.sleep(5)
            raise AssertionError("unreachable")

    hop = Hop("run-1", Deadline.after(0.05), RetryBudget(0))
    with pytest.raises(DeadlineExceeded, match="research did not finish"):
        async with open_hop(hop, what="research"):
            await Researcher(Slow(), [kb_search_tool(kb)], model=MODEL).research(
                sub_question=SUB_QUESTION, question=QUESTION
            )


def test_tool_names_must_not_clash(kb: KnowledgeBase) -> None:
    with pytest.raises(ValueError, match="unique"):
        Researcher(ScriptedProvider(), [kb_search_tool(kb), kb_search_tool(kb)], model=MODEL)


async def test_the_response_names_the_prompt_set_with_the_tools_offered(
    kb: KnowledgeBase, recording_provider: Any, fetch_tool: Tool
) -> None:
    both = Researcher(recording_provider, [kb_search_tool(kb), fetch_tool], model=MODEL)
    kb_only = Researcher(recording_provider, [kb_search_tool(kb)], model=MODEL)

    with_fetch = await both.research(sub_question=SUB_QUESTION, question=QUESTION)
    without = await kb_only.research(sub_question=SUB_QUESTION, question=QUESTION)

    assert (
        with_fetch.prompt_version
        == RESEARCH_PROMPTS.offering([kb_search_tool(kb).spec, fetch_tool.spec]).version
    )
    assert with_fetch.prompt_version is not None
    assert with_fetch.prompt_version.startswith("research:")
    # Offering one tool less is another prompt: another version.
    assert without.prompt_version != with_fetch.prompt_version
    # What was hashed is what was sent.
    assert recording_provider.requests[0].system == RESEARCH_PROMPTS.texts["system"]
