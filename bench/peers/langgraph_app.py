"""The LangGraph peer: podcrew's pipeline as one in-process LangGraph graph.

One FastAPI process. `POST /runs` takes a question and answers with the report, as
bench/baseline does. The run is a compiled `StateGraph` awaited in the request:
`plan` → one `Send("research", …)` per sub-question, all researched at once in the same
event loop (each a tool loop with `kb_search`) → `write` (streamed and collected). No
semaphore, no queue, no separate agents, no Redis, no checkpointer: the graph as LangGraph's
own documents build a map-reduce, served as a FastAPI app serves it.

The LLM client is podcrew's: the official SDK's `AsyncAnthropic` over aiohttp
(`anthropic.DefaultAioHttpClient`), with pools as wide as the bench's and the same timeouts.
Its own retries (2, its default) stand for podcrew's retry policy: at 500 concurrent runs a
connection to the simulator may wait past the 5 s connect timeout on a busy machine, and
podcrew retries those too. The
calls are the baseline's (bench/baseline/app.py: podcrew's own message builders, tool
definitions and knowledge base), made through the SDK's normal API (`messages.create`,
`messages.stream`) as a LangGraph user writes them, so the deterministic model answers with
the same 8 calls as podcrew's.

Run: `python -m bench.peers.langgraph_app --port 8400 --simulator http://127.0.0.1:8200`.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import anthropic
import httpx2
from fastapi import FastAPI, HTTPException
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel

from bench.baseline.app import (
    MAX_STEPS,
    after_turn,
    plan_params,
    planned,
    research_params,
    research_start,
    run_answer,
    serve,
    write_params,
)
from podcrew_research.settings import DEFAULT_CORPUS_DIR
from podcrew_research.tools.kb_search import KnowledgeBase

POOL = 8192  # as the bench gives podcrew's LLM clients (PODCREW_LLM_MAX_CONNECTIONS)


class RunState(TypedDict, total=False):
    """The graph's state: the question, its plan, the sections as the branches add them,
    and the report."""

    question: str
    sub_questions: list[str]
    sections: Annotated[list[dict[str, Any]], operator.add]
    report: str


class Branch(TypedDict):
    """What one research branch is sent."""

    question: str
    sub_question: str


class RunRequest(BaseModel):
    question: str


def build_graph(client: anthropic.AsyncAnthropic, kb: KnowledgeBase) -> Any:
    """plan, then research of every sub-question at once, then write; compiled."""

    async def plan(state: RunState) -> dict[str, Any]:
        message = await client.messages.create(**plan_params(state["question"]))
        return {"sub_questions": planned(message.content)}

    def fan_out(state: RunState) -> list[Send]:
        return [
            Send("research", Branch(question=state["question"], sub_question=sub))
            for sub in state["sub_questions"]
        ]

    async def research(branch: Branch) -> dict[str, Any]:
        messages = research_start(branch["sub_question"], branch["question"])
        findings: list[dict[str, Any]] = []
        for _ in range(MAX_STEPS):
            message = await client.messages.create(**research_params(messages))
            done, findings = after_turn(kb, messages, message.content)
            if done:
                break
        return {"sections": [{"sub_question": branch["sub_question"], "findings": findings}]}

    async def write(state: RunState) -> dict[str, Any]:
        params = write_params(state["question"], state["sections"])
        async with client.messages.stream(**params) as stream:
            return {"report": "".join([text async for text in stream.text_stream])}

    graph = StateGraph(RunState)
    graph.add_node("plan", plan)
    # A node fed by `Send` takes what it is sent, not the graph's state; the stubs know only
    # the latter.
    graph.add_node("research", research)  # type: ignore[arg-type]
    graph.add_node("write", write)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", fan_out, ["research"])
    graph.add_edge("research", "write")
    graph.add_edge("write", END)
    return graph.compile()


def create_app(simulator_url: str) -> FastAPI:
    """The peer's app: the graph and its LLM client built in the lifespan."""
    graphs: list[Any] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limits = httpx2.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        async with (
            anthropic.DefaultAioHttpClient(limits=limits) as http,
            anthropic.AsyncAnthropic(
                base_url=simulator_url, api_key="simulated", http_client=http
            ) as client,
        ):
            graphs.append(build_graph(client, KnowledgeBase.load(DEFAULT_CORPUS_DIR)))
            yield

    app = FastAPI(title="LangGraph research service", lifespan=lifespan)

    @app.post("/runs")
    async def create_run(body: RunRequest) -> dict[str, Any]:
        try:
            state = await graphs[0].ainvoke({"question": body.question})
        except anthropic.APIError as exc:
            raise HTTPException(502, f"LLM call failed: {exc}") from exc
        return run_answer(body.question, state["sub_questions"], state["report"])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    serve(create_app, __doc__)
