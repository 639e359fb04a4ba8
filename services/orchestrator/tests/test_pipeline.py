"""The pipeline against agents answering through an in-memory transport (unit level)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from podcrew_core.deadline import Deadline
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.llm.settings import StageModels
from podcrew_core.resilience import RetryBudget
from podcrew_core.schemas import (
    EventType,
    Finding,
    ResearchedSection,
    ResearchRequest,
    ResearchResponse,
    Source,
    SourceRef,
    Usage,
    WriteRequest,
    WriteResponse,
)
from podcrew_orchestrator.clients.agents import ResearchClient, WriterClient
from podcrew_orchestrator.pipeline import NothingResearched, Outcome, Pipeline, RunSpec


def _agents(fail: set[int]) -> httpx.MockTransport:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/research":
            body = ResearchRequest.model_validate_json(request.content)
            calls["n"] += 1
            index = calls["n"] - 1
            if index in fail:
                return httpx.Response(
                    422,
                    json={"type": "x", "title": "t", "status": 422, "detail": "cannot research"},
                )
            response = ResearchResponse(
                sub_question=body.sub_question,
                findings=[
                    Finding(claim=f"claim {index}", source=Source(id=f"kb:{index}", title="T"))
                ],
                tool_calls=[],
                steps=2,
                usage=Usage(input_tokens=10, output_tokens=5, llm_calls=2),
                model="m",
            )
            return httpx.Response(200, content=response.model_dump_json())
        body_w = WriteRequest.model_validate_json(request.content)
        done = WriteResponse(
            report="report [1]\n",
            sources=[SourceRef(number=1, source=body_w.sections[0].findings[0].source)],
            usage=Usage(input_tokens=7, output_tokens=3, llm_calls=1),
            model="w",
        )
        deltas = [json.dumps({"text": t}) for t in ("report ", "[1]\n")]
        sse = "".join(f"event: delta\ndata: {d}\n\n" for d in deltas)
        sse += f"event: done\ndata: {done.model_dump_json()}\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


async def _run(fail: set[int]) -> tuple[Outcome, list[tuple[EventType, dict[str, Any]]]]:
    http = httpx.AsyncClient(transport=_agents(fail))
    pipeline = Pipeline(
        provider=OfflineProvider(),
        research=ResearchClient(http, "http://research"),
        writer=WriterClient(http, "http://writer"),
    )
    events: list[tuple[EventType, dict[str, Any]]] = []

    async def emit(kind: EventType, data: dict[str, Any]) -> None:
        events.append((kind, data))

    outcome = Outcome()
    try:
        spec = RunSpec(
            run_id="run_1",
            question="How do Python generators work?",
            max_subquestions=3,
            models=StageModels(plan="p", research="r", write="w"),
            deadline=Deadline.after(10),
            budget=RetryBudget(6),
        )
        await pipeline.run(spec, emit, outcome)
    finally:
        await http.aclose()
    return outcome, events


async def test_a_failed_sub_question_does_not_fail_the_run() -> None:
    outcome, events = await _run(fail={1})
    assert outcome.result is not None
    assert outcome.result.unresearched == [outcome.sub_questions[1]]
    finished = [d for k, d in events if k is EventType.RESEARCH_FINISHED]
    assert sorted(d["ok"] for d in finished) == [False, True, True]
    assert [d["text"] for k, d in events if k is EventType.WRITER_DELTA] == ["report ", "[1]\n"]
    # plan (1 call) + two successful research calls (2 each) + writer (1)
    assert outcome.usage.llm_calls == 1 + 2 * 2 + 1


async def test_every_sub_question_failing_fails_the_run_with_a_reason() -> None:
    with pytest.raises(NothingResearched):
        await _run(fail={0, 1, 2})


def test_partial_result_keeps_the_findings_with_numbered_sources() -> None:
    source = Source(id="kb:a#1", title="A")
    outcome = Outcome(
        question="Q?",
        sections=[
            ResearchedSection(sub_question="S1?", findings=[Finding(claim="c1", source=source)]),
            ResearchedSection(
                sub_question="S2?",
                findings=[
                    Finding(claim="c2", source=source),
                    Finding(claim="c3", source=Source(id="kb:b#1", title="B")),
                ],
            ),
        ],
        unresearched=["S3?"],
    )
    result = outcome.partial("the run used 10 of its 5 tokens")
    assert result is not None
    assert "stopped early: the run used 10 of its 5 tokens" in result.report
    assert "- c1 [1]" in result.report and "- c2 [1]" in result.report
    assert "- c3 [2]" in result.report
    assert [ref.number for ref in result.sources] == [1, 2]
    assert result.unresearched == ["S3?"]
    assert Outcome(question="Q?").partial("x") is None
