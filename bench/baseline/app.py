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

import asyncio
import uuid
from typing import Any

import anthropic
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

PLAN_TOOL_DEF = PLAN_TOOL_SPEC.model_dump()
FINDINGS_TOOL_DEF = FINDINGS_TOOL_SPEC.model_dump()
RESEARCH_TOOLS = [KB_SEARCH_SPEC.model_dump(), FETCH_URL_SPEC.model_dump(), FINDINGS_TOOL_DEF]


class RunRequest(BaseModel):
    question: str


def create_app(simulator_url: str) -> FastAPI:
    app = FastAPI(title="baseline research service")
    client = anthropic.Anthropic(base_url=simulator_url, api_key="simulated", max_retries=0)
    kb = KnowledgeBase.load(DEFAULT_CORPUS_DIR)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    def plan(question: str) -> list[str]:
        message = client.messages.create(
            model=PLAN_MODEL,
            max_tokens=1024,
            system="You are a planner. Break the question into sub-questions. Call submit_plan.",
            messages=[{"role": "user", "content": plan_message(question, 4)}],
            tools=[PLAN_TOOL_DEF],
            tool_choice={"type": "tool", "name": PLAN_TOOL},
        )
        block = next(b for b in message.content if b.type == "tool_use")
        return list(block.input["sub_questions"])  # type: ignore[index]

    def research(sub_question: str, question: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": research_message(sub_question, question)}
        ]
        for _ in range(MAX_STEPS):
            message = client.messages.create(
                model=RESEARCH_MODEL,
                max_tokens=1024,
                system="You are a research agent. Search, then call submit_findings.",
                messages=messages,
                tools=RESEARCH_TOOLS,
            )
            messages.append(
                {"role": "assistant", "content": [b.model_dump() for b in message.content]}
            )
            results = []
            for block in message.content:
                if block.type != "tool_use":
                    continue
                if block.name == FINDINGS_TOOL:
                    return list(block.input.get("findings", []))  # type: ignore[union-attr]
                if block.name == KB_SEARCH_TOOL:
                    args: dict[str, Any] = block.input  # type: ignore[assignment]
                    hits = kb.search(str(args.get("query", "")), int(args.get("k", 5)))
                    content, is_error = hits_json(hits), False
                else:
                    content, is_error = "tool not available", True
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": block.id,
                        "content": content,
                        "is_error": is_error,
                    }
                )
            if not results:
                break
            messages.append({"role": "user", "content": results})
        return []

    def write(question: str, sections: list[dict[str, Any]]) -> str:
        body = WriteRequest(
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
        message, _ = write_message(body)
        parts = []
        with client.messages.stream(
            model=WRITE_MODEL,
            max_tokens=4096,
            system="You are a writer. Write a cited markdown report from the findings.",
            messages=[{"role": "user", "content": message}],
        ) as stream:
            for text in stream.text_stream:
                parts.append(text)
        return "".join(parts)

    def run_pipeline(question: str) -> dict[str, Any]:
        sub_questions = plan(question)
        sections = []
        for sub in sub_questions:  # one after another, as the tutorials do
            sections.append({"sub_question": sub, "findings": research(sub, question)})
        report = write(question, sections)
        return {
            "id": f"run_{uuid.uuid4().hex}",
            "status": "succeeded",
            "question": question,
            "sub_questions": sub_questions,
            "report": report,
        }

    @app.post("/runs")
    async def create_run(body: RunRequest) -> dict[str, Any]:
        async with semaphore:
            try:
                return await run_in_threadpool(run_pipeline, body.question)
            except anthropic.APIError as exc:
                raise HTTPException(502, f"LLM call failed: {exc}") from exc

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
