"""The pipeline against agents answering through an in-memory transport (unit level)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import httpx
import orjson
import pytest

from podcrew_core.contracts.citations import sources_section
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import (
    BudgetExceeded,
    DeadlineExceeded,
    LLMRejected,
    Overloaded,
    PodcrewError,
)
from podcrew_core.contracts.hop import Hop, RetryBudget
from podcrew_core.contracts.problem import to_problem
from podcrew_core.contracts.schemas import (
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
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.llm.settings import StageModels
from podcrew_orchestrator.clients.agents import ResearchClient, WriterClient
from podcrew_orchestrator.pipeline import (
    PLANNER_PROMPTS,
    NothingResearched,
    Outcome,
    Pipeline,
    RunSpec,
    plan_message,
)

# The writer's stream: text deltas, each after a pause in seconds.
Deltas = Sequence[tuple[float, str]]


def _writer_stream(deltas: Deltas, done: WriteResponse) -> AsyncIterator[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for pause_s, text in deltas:
            await asyncio.sleep(pause_s)
            yield f"event: delta\ndata: {json.dumps({'text': text})}\n\n".encode()
        yield f"event: done\ndata: {done.model_dump_json()}\n\n".encode()

    return stream()


def _agents(fail: Collection[int], deltas: Deltas) -> httpx.MockTransport:
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
                # Two builds of the agent answer during a rollout: the first call the old.
                prompt_version="research:0ld" if index == 0 else "research:new",
            )
            return httpx.Response(200, content=response.model_dump_json())
        body_w = WriteRequest.model_validate_json(request.content)
        done = WriteResponse(
            report="".join(text for _, text in deltas),
            sources=[SourceRef(number=1, source=body_w.sections[0].findings[0].source)],
            usage=Usage(input_tokens=7, output_tokens=3, llm_calls=1),
            model="w",
            prompt_version="writer:w1",
        )
        return httpx.Response(
            200,
            content=_writer_stream(deltas, done),
            headers={"content-type": "text/event-stream"},
        )

    return httpx.MockTransport(handle)


Events = list[tuple[EventType, dict[str, Any]]]


async def _run(
    fail: Collection[int] = (),
    deltas: Deltas = ((0.0, "report "), (0.0, "[1]\n")),
    flush_s: float = 0.0,
    emitted_at: list[float] | None = None,
) -> tuple[Outcome, Events]:
    http = httpx.AsyncClient(transport=_agents(fail, deltas))
    pipeline = Pipeline(
        provider=OfflineProvider(),
        research=ResearchClient(http, "http://research"),
        writer=WriterClient(http, "http://writer"),
        writer_delta_flush_s=flush_s,
    )
    events: Events = []

    async def emit(batch: Sequence[tuple[EventType, dict[str, Any]]]) -> None:
        events.extend(batch)
        if emitted_at is not None:
            emitted_at.extend(
                time.monotonic() for kind, _ in batch if kind is EventType.WRITER_DELTA
            )

    outcome = Outcome()
    try:
        spec = RunSpec(
            question="How do Python generators work?",
            max_subquestions=3,
            models=StageModels(plan="p", research="r", write="w"),
            hop=Hop("run_1", Deadline.after(10), RetryBudget(6)),
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


def _delta_texts(events: Events) -> list[str]:
    return [d["text"] for k, d in events if k is EventType.WRITER_DELTA]


async def test_writer_deltas_are_published_in_batches_with_the_same_text() -> None:
    deltas = [(0.005, f"word{n} ") for n in range(60)]
    emitted_at: list[float] = []
    started = time.monotonic()
    outcome, events = await _run(deltas=deltas, flush_s=0.05, emitted_at=emitted_at)
    elapsed = time.monotonic() - started
    texts = _delta_texts(events)
    assert "".join(texts) == "".join(t for _, t in deltas)
    assert outcome.result is not None and outcome.result.report == "".join(texts)
    # One event per 50 ms of writing (the stream takes >= 0.3 s), not one per delta: the
    # first delta at once, then one per interval, then the rest when the stream ends.
    assert 2 <= len(texts) <= elapsed / 0.05 + 2
    assert len(texts) < len(deltas) / 3
    # Only the rest, published when the stream ends, may follow its predecessor sooner.
    gaps = [b - a for a, b in itertools.pairwise(emitted_at)]
    assert all(gap >= 0.045 for gap in gaps[:-1]), gaps


async def test_writer_text_is_published_while_the_writer_pauses() -> None:
    # Text is held for the flush interval, not until the next delta comes.
    deltas = [(0.0, "one "), (0.0, "two "), (0.5, "three")]
    _, events = await _run(deltas=deltas, flush_s=0.05)
    texts = _delta_texts(events)
    assert "".join(texts) == "one two three"
    assert texts[-1] == "three"  # "two " went out during the pause, not with "three"


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
    # The writer's Sources list, word for word.
    assert result.report.endswith(sources_section(result.sources))
    assert "\n1. A (kb:a#1)\n2. B (kb:b#1)\n" in result.report
    assert result.unresearched == ["S3?"]
    assert Outcome(question="Q?").partial("x") is None


def test_the_planner_reads_the_question_its_bound_and_the_threads_earlier_turns() -> None:
    sent = json.loads(plan_message("And lists?", 3, [("What is a generator?", "A lazy iterator.")]))
    assert sent == {
        "question": "And lists?",
        "max_sub_questions": 3,
        "earlier_turns": [{"asked": "What is a generator?", "answered": "A lazy iterator."}],
    }
    assert "earlier_turns" not in json.loads(plan_message("Q?", 3))


# --- errors keep their meaning across a hop; retries stay within the run's budget ----------


def _answering(
    research: Callable[[int], httpx.Response], writer: Callable[[WriteRequest], httpx.Response]
) -> tuple[httpx.MockTransport, list[str]]:
    """Agents whose n-th research call answers `research(n)` and whose writer answers
    `writer(request)`; the retry budget each research call carried is recorded."""
    budgets: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/research":
            budgets.append(request.headers["x-podcrew-retry-budget"])
            return research(len(budgets) - 1)
        return writer(WriteRequest.model_validate_json(request.content))

    return httpx.MockTransport(handle), budgets


def _found(retries: int = 0) -> httpx.Response:
    response = ResearchResponse(
        sub_question="s",
        findings=[Finding(claim="c", source=Source(id="kb:1", title="T"))],
        tool_calls=[],
        steps=1,
        usage=Usage(input_tokens=1, llm_calls=1),
        model="m",
        retries=retries,
    )
    return httpx.Response(200, content=response.model_dump_json())


def _written(request: WriteRequest, retries: int = 0) -> httpx.Response:
    done = WriteResponse(
        report="r", sources=[], usage=Usage(llm_calls=1), model="w", retries=retries
    )
    sse = f"event: done\ndata: {done.model_dump_json()}\n\n"
    return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})


def _stream_error(error: PodcrewError) -> Callable[[WriteRequest], httpx.Response]:
    def answer(_: WriteRequest) -> httpx.Response:
        sse = 'event: delta\ndata: {"text": "partial "}\n\n'
        sse += f"event: error\ndata: {orjson.dumps(to_problem(error)).decode()}\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    return answer


async def _run_against(transport: httpx.MockTransport, retries: int = 6) -> tuple[RunSpec, Events]:
    http = httpx.AsyncClient(transport=transport)
    pipeline = Pipeline(
        provider=OfflineProvider(),
        research=ResearchClient(http, "http://research"),
        writer=WriterClient(http, "http://writer"),
        writer_delta_flush_s=0.0,
    )
    spec = RunSpec(
        question="How do Python generators work?",
        max_subquestions=3,
        models=StageModels(plan="p", research="r", write="w"),
        hop=Hop("run_1", Deadline.after(10), RetryBudget(retries)),
    )
    events: Events = []

    async def emit(batch: Sequence[tuple[EventType, dict[str, Any]]]) -> None:
        events.extend(batch)

    try:
        await pipeline.run(spec, emit, Outcome())
    finally:
        await http.aclose()
    return spec, events


@pytest.mark.parametrize(
    "error",
    [BudgetExceeded("the run used 120 of its 100 tokens"), DeadlineExceeded("writing: too late")],
    ids=lambda e: e.slug,
)
async def test_a_writer_failure_keeps_its_meaning_in_the_stream_and_before_it(
    error: PodcrewError,
) -> None:
    in_stream, _ = _answering(lambda _: _found(), _stream_error(error))
    with pytest.raises(type(error), match=error.detail):
        await _run_against(in_stream)

    refused, _ = _answering(
        lambda _: _found(), lambda _: httpx.Response(error.status, json=to_problem(error))
    )
    with pytest.raises(type(error), match=error.detail):
        await _run_against(refused)


async def test_a_research_failure_is_reported_by_what_the_agent_said() -> None:
    rejected = LLMRejected("the provider refused the request")
    transport, budgets = _answering(
        lambda n: _found() if n else httpx.Response(502, json=to_problem(rejected)), _written
    )
    _, events = await _run_against(transport)
    failed = [d for k, d in events if k is EventType.RESEARCH_FINISHED and not d["ok"]]
    assert failed == [
        {
            "index": failed[0]["index"],
            "ok": False,
            "error": "llm-rejected",
            "detail": rejected.detail,
        }
    ]
    assert len(budgets) == 3  # never retried


async def test_every_research_call_out_of_budget_fails_the_run_as_budget_exceeded() -> None:
    spent = BudgetExceeded("the run used 120 of its 100 tokens", budget="run_tokens")
    transport, budgets = _answering(lambda _: httpx.Response(402, json=to_problem(spent)), _written)
    with pytest.raises(BudgetExceeded):
        await _run_against(transport)
    assert len(budgets) == 3


async def test_a_deadline_too_short_for_any_research_fails_the_run_as_deadline_exceeded() -> None:
    # Each research agent refuses work it cannot finish in time (504 deadline-exceeded): the
    # run ends for that reason, not as `nothing-researched`.
    late = DeadlineExceeded("research needs at least 0.05s but only 0.01s remain")
    transport, budgets = _answering(lambda _: httpx.Response(504, json=to_problem(late)), _written)
    with pytest.raises(DeadlineExceeded, match=r"only 0\.01s remain"):
        await _run_against(transport)
    assert len(budgets) == 3  # not retryable: asked once each


async def test_the_fan_out_spends_at_most_the_runs_retry_budget() -> None:
    busy = Overloaded("no research-agent slot freed up")
    # The first call of each sub-question is refused; the retry succeeds, the agent
    # reporting one retry of its own. The writer then has what is left: nothing.
    transport, budgets = _answering(
        lambda n: httpx.Response(503, json=to_problem(busy)) if n < 3 else _found(retries=1),
        _written,
    )
    spec, _ = await _run_against(transport, retries=7)
    assert sorted(budgets) == ["1", "1", "1", "2", "2", "2"]  # a share of 2 each, then 1 left
    assert (spec.hop.retries.spent, spec.hop.retries.remaining) == (6, 1)

    transport, budgets = _answering(lambda _: httpx.Response(503, json=to_problem(busy)), _written)
    with pytest.raises(NothingResearched):
        await _run_against(transport, retries=0)
    assert len(budgets) == 3  # no budget, no retry


async def test_the_run_records_every_prompt_set_version_its_stages_used() -> None:
    outcome, _ = await _run()
    # The planner's own set, and what each agent said it used (both research builds).
    assert outcome.prompt_version == (
        f"{PLANNER_PROMPTS.version},research:0ld,research:new,writer:w1"
    )
    assert PLANNER_PROMPTS.version.startswith("planner:")
