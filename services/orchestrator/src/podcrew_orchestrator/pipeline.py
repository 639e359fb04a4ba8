"""The research pipeline: plan → fan out to research agents in parallel → write.

Free of FastAPI and of Redis: it talks to the model through `LLMProvider`, to the agents
through their clients, and reports progress through an `EventSink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from podcrew_core.contracts.citations import number_sources, sources_section
from podcrew_core.contracts.errors import (
    BudgetExceeded,
    DeadlineExceeded,
    PodcrewError,
    UpstreamError,
)
from podcrew_core.contracts.hop import Hop
from podcrew_core.contracts.schemas import (
    EventType,
    Plan,
    ResearchedSection,
    ResearchRequest,
    ResearchResponse,
    RunResult,
    Usage,
    WriteRequest,
    WriteResponse,
)
from podcrew_core.llm import LLMProvider, LLMRequest, Message, Stage, output_tool, structured
from podcrew_core.llm.prompts import PromptSet, combine_versions
from podcrew_core.llm.settings import StageModels
from podcrew_core.runtime.batching import batch_deltas
from podcrew_core.runtime.metrics import FANOUT_WIDTH
from podcrew_core.runtime.resilience import unreachable
from podcrew_core.runtime.tracing import invoke_agent_span
from podcrew_orchestrator.clients.agents import (
    RESEARCH_AGENT,
    WRITER_AGENT,
    ResearchClient,
    WriterClient,
)

Event = tuple[EventType, dict[str, Any]]
# Stores the events given, in order, in one step: the events the pipeline has in hand at
# once (the plan and the research starts, a sub-question's tool calls and its end) cost one
# round trip to the store, not one each.
EventSink = Callable[[Sequence[Event]], Awaitable[object]]

# The writer's text is published as one `writer.delta` event per this many seconds, not one
# per delta (podcrew_core.runtime.batching says why).
WRITER_DELTA_FLUSH_S = 0.05

PLAN_TOOL = "submit_plan"
PLANNER_PROMPT = (
    "You are podcrew's planner. The user message is a JSON document: the research question, "
    "the maximum number of sub-questions, and the earlier turns of the conversation, if "
    "any (oldest first). Break the question into between 2 and that maximum of "
    "self-contained sub-questions that together answer it. Each must be answerable on its "
    f"own by a researcher with a search tool. Call {PLAN_TOOL}."
)
PLAN_TOOL_SPEC = output_tool(PLAN_TOOL, "Submit the research plan.", Plan)
# Everything the planner sends a model; its version goes into every run's `prompt_version`.
PLANNER_PROMPTS = PromptSet("planner", {"system": PLANNER_PROMPT}, (PLAN_TOOL_SPEC,))


def plan_message(
    question: str, max_subquestions: int, history: Sequence[tuple[str, str]] = ()
) -> str:
    """The planner's input as a JSON document; `history` is the thread's earlier
    (question, answer) turns."""
    data: dict[str, Any] = {"question": question, "max_sub_questions": max_subquestions}
    if history:
        data["earlier_turns"] = [{"asked": asked, "answered": said} for asked, said in history]
    return json.dumps(data, ensure_ascii=False)


log = structlog.get_logger(__name__)

_TOOL_EVENT_FIELDS = {"name", "input", "ok", "results", "cached"}


class NothingResearched(UpstreamError):
    slug = "nothing-researched"
    title = "No sub-question could be researched"
    retryable = False


def _why_nothing_was_researched(failures: list[PodcrewError], spec: RunSpec) -> PodcrewError:
    """The error a run ends with when no research call found anything: what ends a run
    whatever the hop that ran into it (a spent budget, then the run's deadline), else
    `NothingResearched`. A deadline too short for any research is `deadline-exceeded`."""
    for ending in (BudgetExceeded, DeadlineExceeded):
        hit = next((f for f in failures if isinstance(f, ending)), None)
        if hit is not None:
            return ending(hit.detail)
    if spec.hop.deadline.remaining() <= 0:
        return DeadlineExceeded("the run's deadline passed before any research call answered")
    return NothingResearched("every research call failed; see the research.finished events")


@dataclass
class Outcome:
    """What a run produced; filled in as the pipeline goes, so a run that fails part-way
    still has its usage and whatever it found."""

    question: str = ""
    sub_questions: list[str] = field(default_factory=list)
    sections: list[ResearchedSection] = field(default_factory=list)
    unresearched: list[str] = field(default_factory=list)
    result: RunResult | None = None
    usage: Usage = field(default_factory=Usage)
    tool_calls: dict[str, int] = field(default_factory=dict)  # by tool name, for the audit
    # The prompt sets' versions each stage reported using (the agents say theirs).
    prompt_versions: set[str] = field(default_factory=set)

    @property
    def prompt_version(self) -> str | None:
        """The run's one version string, `planner:…,research:…,writer:…`."""
        return combine_versions(self.prompt_versions)

    def partial(self, reason: str) -> RunResult | None:
        """A report composed without the model from the findings gathered so far."""
        if not self.sections:
            return None
        sections, sources = number_sources(self.sections)
        lines = [
            f"# {self.question}",
            "",
            f"> This run stopped early: {reason}",
            "",
            "These are the findings gathered before it stopped.",
        ]
        for section in sections:
            lines += ["", f"## {section.sub_question}", ""]
            lines += [f"- {finding.claim} [{n}]" for n, finding in section.findings]
        return RunResult(
            report="\n".join(lines) + "\n" + sources_section(sources),
            sources=sources,
            unresearched=self.unresearched,
        )


@dataclass(frozen=True)
class RunSpec:
    """What the pipeline needs to know about one run; `hop` is the run's own (its deadline,
    retry budget and limits), from which each call to an agent gets its hop."""

    question: str
    max_subquestions: int
    models: StageModels
    hop: Hop
    history: list[tuple[str, str]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.hop.run_id or ""


@dataclass
class Pipeline:
    provider: LLMProvider
    research: ResearchClient
    writer: WriterClient
    writer_delta_flush_s: float = WRITER_DELTA_FLUSH_S

    async def unreachable_agents(self) -> list[str]:
        """The agents none of whose replicas answers its health check now."""
        away = []
        for name, agent in ((RESEARCH_AGENT, self.research), (WRITER_AGENT, self.writer)):
            if not await agent.reachable():
                away.append(name)
        return away

    async def run(self, spec: RunSpec, emit: EventSink, outcome: Outcome) -> None:
        """Plan, research in parallel, write. The caller opens `spec.hop` over this task
        (`runtime.scope.open_hop`), so the planner's own LLM calls obey it too."""
        outcome.question = spec.question
        plan = await self._plan(spec, outcome)
        outcome.sub_questions = plan.sub_questions
        await emit(
            [
                (EventType.RUN_PLANNED, {"sub_questions": plan.sub_questions}),
                *(
                    (EventType.RESEARCH_STARTED, {"index": index, "sub_question": sub})
                    for index, sub in enumerate(plan.sub_questions)
                ),
            ]
        )
        FANOUT_WIDTH.observe(len(plan.sub_questions))
        results = await self._fan_out(spec, plan.sub_questions, emit)
        failures: list[PodcrewError] = []
        for sub, response in zip(plan.sub_questions, results, strict=True):
            if isinstance(response, PodcrewError):
                outcome.unresearched.append(sub)
                failures.append(response)
                continue
            for call in response.tool_calls:
                outcome.tool_calls[call.name] = outcome.tool_calls.get(call.name, 0) + 1
            outcome.usage += response.usage
            if response.prompt_version:
                outcome.prompt_versions.add(response.prompt_version)
            outcome.sections.append(ResearchedSection(sub_question=sub, findings=response.findings))
        if not outcome.sections:
            raise _why_nothing_was_researched(failures, spec)
        await self._write_report(spec, outcome, emit)

    async def _fan_out(
        self, spec: RunSpec, sub_questions: list[str], emit: EventSink
    ) -> list[ResearchResponse | PodcrewError]:
        """Research every sub-question at once. Each call may spend an equal share of the
        retries left; what each spent (its own retries and the agent's) comes off the run's
        budget, so the whole fan-out stays within it."""
        share = spec.hop.retries.remaining // len(sub_questions)
        hops = [spec.hop.share(share) for _ in sub_questions]
        tasks = [
            asyncio.ensure_future(self._research(spec, index, sub, hop, emit))
            for index, (sub, hop) in enumerate(zip(sub_questions, hops, strict=True))
        ]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            # gather leaves the others running when one fails: stop them, so nothing is
            # published for this run after its final event.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for hop in hops:
                spec.hop.retries.charge(hop.retries.spent)

    async def _write_report(self, spec: RunSpec, outcome: Outcome, emit: EventSink) -> None:
        write = WriteRequest(
            run_id=spec.run_id,
            question=spec.question,
            sections=outcome.sections,
            unresearched=outcome.unresearched,
            model=spec.models.write,
        )
        report = await self._write(write, spec, emit)
        outcome.usage += report.usage
        if report.prompt_version:
            outcome.prompt_versions.add(report.prompt_version)
        outcome.result = RunResult(
            report=report.report, sources=report.sources, unresearched=outcome.unresearched
        )

    async def _plan(self, spec: RunSpec, outcome: Outcome) -> Plan:
        request = LLMRequest(
            stage=Stage.PLAN,
            model=spec.models.plan,
            system=PLANNER_PROMPTS.texts["system"],
            messages=[
                Message(
                    role="user",
                    content=plan_message(spec.question, spec.max_subquestions, spec.history),
                )
            ],
            max_tokens=1024,
        )
        plan, response = await structured(self.provider, request, PLAN_TOOL_SPEC, Plan)
        outcome.usage += response.usage
        outcome.prompt_versions.add(PLANNER_PROMPTS.version)
        return Plan(sub_questions=plan.sub_questions[: spec.max_subquestions])

    async def _research(
        self, spec: RunSpec, index: int, sub_question: str, hop: Hop, emit: EventSink
    ) -> ResearchResponse | PodcrewError:
        """One sub-question (its `research.started` is the caller's); a failure is reported
        in events and returned, never raised, unless no research agent could be reached."""
        body = ResearchRequest(
            run_id=spec.run_id,
            question=spec.question,
            sub_question=sub_question,
            model=spec.models.research,
        )
        try:
            response = await self.research.research(body, hop)
        except PodcrewError as exc:
            if unreachable(exc):
                # No replica took the call: the run waits for one (the worker hands it back)
                # rather than going on without this sub-question.
                raise
            log.warning("research_failed", index=index, error=exc.slug, detail=exc.detail)
            await emit(
                [
                    (
                        EventType.RESEARCH_FINISHED,
                        {"index": index, "ok": False, "error": exc.slug, "detail": exc.detail},
                    )
                ]
            )
            return exc
        events: list[Event] = [
            (EventType.TOOL_CALLED, {"index": index, **call.model_dump(include=_TOOL_EVENT_FIELDS)})
            for call in response.tool_calls
        ]
        finished: dict[str, Any] = {"index": index, "ok": True, "findings": len(response.findings)}
        if response.unavailable_tools:
            finished["unavailable_tools"] = response.unavailable_tools
        events.append((EventType.RESEARCH_FINISHED, finished))
        await emit(events)
        return response

    async def _write(self, body: WriteRequest, spec: RunSpec, emit: EventSink) -> WriteResponse:
        await emit([(EventType.WRITER_STARTED, {"sections": len(body.sections)})])
        # The span is opened here, not in the client's generator: the pipeline returns at
        # the result without draining the generator, which then closes in another context.
        with invoke_agent_span(WRITER_AGENT, remote=True, run_id=spec.run_id):
            stream = self.writer.stream(body, spec.hop)
            # Closed on the way out, so nothing is read, nor published, after the result.
            async with contextlib.aclosing(
                batch_deltas(stream, self.writer_delta_flush_s)
            ) as pieces:
                async for item in pieces:
                    if isinstance(item, WriteResponse):
                        return item
                    await emit([(EventType.WRITER_DELTA, {"text": item})])
        raise UpstreamError("writer-agent closed the stream without a result")  # pragma: no cover
