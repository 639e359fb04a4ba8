"""The baseline: the same research pipeline written the way the common tutorials write it.

One FastAPI process. `POST /runs` takes a question and answers with the report. A semaphore
of 10 bounds the runs in progress; each run executes in a worker thread with the
synchronous `anthropic` client: plan, then the sub-questions researched one after another
(each a tool loop with `kb_search`), then the report, streamed and collected. No queue, no
separate agents, no Redis.

It asks the same simulated Messages API the same messages with the same tools as podcrew (the
message builders, tool definitions and knowledge base are podcrew's services' own), so the
deterministic model answers both with the same calls: the difference measured is the
architecture, not the work.

Run: `python -m bench.baseline --port 8300 --simulator http://127.0.0.1:8200`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import anthropic
import uvicorn
from anthropic.types import ToolUseBlock
from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from podcrew_core.contracts.schemas import Finding, ResearchedSection, WriteRequest
from podcrew_orchestrator.pipeline import PLAN_TOOL, PLAN_TOOL_SPEC, plan_message
from podcrew_research.loop import FINDINGS_TOOL, FINDINGS_TOOL_SPEC, research_message
from podcrew_research.settings import DEFAULT_CORPUS_DIR
from podcrew_research.tools.fetch_url import FETCH_URL_SPEC
from podcrew_research.tools.kb_search import (
    KB_SEARCH_SPEC,
    KB_SEARCH_TOOL,
    KnowledgeBase,
    hits_json,
)
from podcrew_writer.compose import write_message

CONCURRENCY = 10
PLAN_MODEL = RESEARCH_MODEL = "claude-haiku-4-5"
WRITE_MODEL = "claude-sonnet-4-5"
MAX_STEPS = 4

# `Any`: plain dicts, as the tutorials pass them; the SDK types its parameters as TypedDicts.
PLAN_TOOL_DEF: Any = PLAN_TOOL_SPEC.model_dump()
FINDINGS_TOOL_DEF: Any = FINDINGS_TOOL_SPEC.model_dump()
RESEARCH_TOOLS: list[Any] = [
    KB_SEARCH_SPEC.model_dump(),
    FETCH_URL_SPEC.model_dump(),
    FINDINGS_TOOL_DEF,
]


class RunRequest(BaseModel):
    question: str


def plan_params(question: str) -> dict[str, Any]:
    """The plan call's parameters: the planner's tool, forced."""
    return {
        "model": PLAN_MODEL,
        "max_tokens": 1024,
        "system": "You are a planner. Break the question into sub-questions. Call submit_plan.",
        "messages": [{"role": "user", "content": plan_message(question, 4)}],
        "tools": [PLAN_TOOL_DEF],
        "tool_choice": {"type": "tool", "name": PLAN_TOOL},
    }


def planned(content: list[Any]) -> list[str]:
    """The sub-questions of the plan call's answer."""
    block = next(b for b in content if b.type == "tool_use")
    return list(cast(list[str], block.input["sub_questions"]))


def research_start(sub_question: str, question: str) -> list[Any]:
    """The research conversation's first turn."""
    return [{"role": "user", "content": research_message(sub_question, question)}]


def research_params(messages: list[Any]) -> dict[str, Any]:
    """One turn of the tool loop: the conversation so far and the research tools."""
    return {
        "model": RESEARCH_MODEL,
        "max_tokens": 1024,
        "system": "You are a research agent. Search, then call submit_findings.",
        "messages": messages,
        "tools": RESEARCH_TOOLS,
    }


def after_turn(
    kb: KnowledgeBase, messages: list[Any], content: list[Any]
) -> tuple[bool, list[dict[str, Any]]]:
    """Record the model's turn in `messages` and answer its tool calls there; whether the
    loop is over, and the findings it ended with."""
    messages.append({"role": "assistant", "content": [b.model_dump() for b in content]})
    results = []
    for block in content:
        if block.type != "tool_use":
            continue
        if block.name == FINDINGS_TOOL:
            return True, list(cast(list[dict[str, Any]], block.input.get("findings", [])))
        results.append(tool_result(kb, block))
    if not results:
        return True, []
    messages.append({"role": "user", "content": results})
    return False, []


def tool_result(kb: KnowledgeBase, block: ToolUseBlock) -> dict[str, Any]:
    """The `tool_result` for one tool call: `kb_search` answers, any other is refused."""
    if block.name == KB_SEARCH_TOOL:
        args: dict[str, Any] = block.input
        hits = kb.search(str(args.get("query", "")), int(args.get("k", 5)))
        content, is_error = hits_json(hits), False
    else:
        content, is_error = "tool not available", True
    return {
        "type": "tool_result",
        "tool_use_id": block.id,
        "content": content,
        "is_error": is_error,
    }


def write_params(question: str, sections: list[dict[str, Any]]) -> dict[str, Any]:
    """The write call's parameters (the caller streams it)."""
    return {
        "model": WRITE_MODEL,
        "max_tokens": 4096,
        "system": "You are a writer. Write a cited markdown report from the findings.",
        "messages": [
            {
                "role": "user",
                "content": write_message(writer_request(question, sections))[0],
            }
        ],
    }


def run_answer(question: str, sub_questions: list[str], report: str) -> dict[str, Any]:
    """What `POST /runs` answers."""
    return {
        "id": f"run_{uuid.uuid4().hex}",
        "status": "succeeded",
        "question": question,
        "sub_questions": sub_questions,
        "report": report,
    }


@dataclass(frozen=True)
class Pipeline:
    """One run, synchronous, in the calling thread: plan, research each sub-question in
    turn, write."""

    client: anthropic.Anthropic
    kb: KnowledgeBase

    def run(self, question: str) -> dict[str, Any]:
        sub_questions = planned(self.client.messages.create(**plan_params(question)).content)
        sections = []
        for sub in sub_questions:  # one after another, as the tutorials do
            sections.append({"sub_question": sub, "findings": self.research(sub, question)})
        return run_answer(question, sub_questions, self.write(question, sections))

    def research(self, sub_question: str, question: str) -> list[dict[str, Any]]:
        """The tool loop: up to `MAX_STEPS` turns, until the model submits its findings."""
        messages = research_start(sub_question, question)
        for _ in range(MAX_STEPS):
            message = self.client.messages.create(**research_params(messages))
            done, findings = after_turn(self.kb, messages, message.content)
            if done:
                return findings
        return []

    def write(self, question: str, sections: list[dict[str, Any]]) -> str:
        """The report, streamed and collected."""
        with self.client.messages.stream(**write_params(question, sections)) as stream:
            return "".join(stream.text_stream)


def writer_request(question: str, sections: list[dict[str, Any]]) -> WriteRequest:
    """The findings for the writer, as the writer agent takes them."""
    return WriteRequest(
        run_id="baseline",
        question=question,
        sections=[
            ResearchedSection(
                sub_question=s["sub_question"],
                findings=[Finding.model_validate(f) for f in s["findings"]],
            )
            for s in sections
        ],
    )


def create_app(simulator_url: str) -> FastAPI:
    app = FastAPI(title="baseline research service")
    client = anthropic.Anthropic(base_url=simulator_url, api_key="simulated", max_retries=0)
    pipeline = Pipeline(client, KnowledgeBase.load(DEFAULT_CORPUS_DIR))
    semaphore = asyncio.Semaphore(CONCURRENCY)

    @app.post("/runs")
    async def create_run(body: RunRequest) -> dict[str, Any]:
        async with semaphore:
            try:
                return await run_in_threadpool(pipeline.run, body.question)
            except anthropic.APIError as exc:
                raise HTTPException(502, f"LLM call failed: {exc}") from exc

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve(create: Callable[[str], FastAPI], description: str | None) -> None:
    """Serve the app `create` builds for `--simulator` on `--port` with uvicorn, as `uvicorn
    app:app` does (uvloop and httptools when installed), minus access logs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--simulator", required=True, help="base URL of the simulated API")
    args = parser.parse_args()
    # Warnings only, as `--log-level warning` means. The knowledge base's embedding library
    # calls `logging.basicConfig(level=INFO)` on import, which would otherwise log every LLM
    # request; configured first, the root logger keeps this level.
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(create(args.simulator), host=args.host, port=args.port, log_level="warning")
