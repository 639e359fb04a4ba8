"""Calls to the research agents and the writer agent over the shared pooled client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import orjson
from httpx_sse import aconnect_sse

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BudgetExceeded, UpstreamError, UpstreamTimeout
from podcrew_core.contracts.schemas import (
    ResearchRequest,
    ResearchResponse,
    WriteDelta,
    WriteRequest,
    WriteResponse,
)
from podcrew_core.runtime.http import internal_headers, observe_hop, post_json
from podcrew_core.runtime.metrics import HTTP_CLIENT_DURATION, HTTP_CLIENT_REQUESTS
from podcrew_core.runtime.tracing import invoke_agent_span

RESEARCH_AGENT = "research-agent"
WRITER_AGENT = "writer-agent"


class ResearchClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + "/v1/research"

    async def research(
        self,
        body: ResearchRequest,
        deadline: Deadline,
        retry_budget: int,
        limits: BudgetLimits | None = None,
    ) -> ResearchResponse:
        with invoke_agent_span(
            RESEARCH_AGENT,
            remote=True,
            run_id=body.run_id,
            attributes={"gen_ai.request.model": body.model} if body.model else None,
        ):
            return await post_json(
                self.http,
                self.url,
                body,
                ResearchResponse,
                target=RESEARCH_AGENT,
                run_id=body.run_id,
                deadline=deadline,
                retry_budget=retry_budget,
                limits=limits,
            )


class WriterClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.url = base_url.rstrip("/") + "/v1/write/stream"

    async def stream(
        self,
        body: WriteRequest,
        deadline: Deadline,
        retry_budget: int,
        limits: BudgetLimits | None = None,
    ) -> AsyncIterator[str | WriteResponse]:
        """Text deltas as the writer produces them, then the final `WriteResponse`.

        Counted and timed like `post_json` calls (target `writer-agent`), to the last event.
        """
        started = time.perf_counter()
        recorded = False

        def record(outcome: str) -> None:
            # Once, and before the final yield: the consumer stops reading at the result.
            nonlocal recorded
            if not recorded:
                recorded = True
                HTTP_CLIENT_REQUESTS.labels(WRITER_AGENT, outcome).inc()
                HTTP_CLIENT_DURATION.labels(WRITER_AGENT).observe(time.perf_counter() - started)

        headers = {
            "content-type": "application/json",
            **internal_headers(body.run_id, deadline, retry_budget, limits),
        }
        try:
            async with aconnect_sse(
                self.http,
                "POST",
                self.url,
                content=body.model_dump_json(),
                headers=headers,
                timeout=httpx.Timeout(max(0.001, deadline.remaining()), connect=2.0),
            ) as source:
                # For a stream the hop is what it adds before the answer starts.
                observe_hop(WRITER_AGENT, source.response, time.perf_counter() - started)
                if source.response.status_code >= 400:
                    record(f"http_{source.response.status_code // 100}xx")
                    await source.response.aread()
                    raise UpstreamError(
                        f"writer-agent answered {source.response.status_code}: "
                        f"{source.response.text[:200]}"
                    )
                async for sse in source.aiter_sse():
                    if sse.event == "delta":
                        yield WriteDelta.model_validate_json(sse.data).text
                    elif sse.event == "done":
                        result = WriteResponse.model_validate_json(sse.data)
                        record("ok")
                        yield result
                        return
                    elif sse.event == "error":
                        record("error")
                        problem = orjson.loads(sse.data)
                        detail = problem.get("detail", "unknown error")
                        if str(problem.get("type", "")).endswith("/" + BudgetExceeded.slug):
                            raise BudgetExceeded(detail)
                        raise UpstreamError(f"writer-agent failed: {detail}")
        except httpx.TimeoutException as exc:
            record("timeout")
            raise UpstreamTimeout("writer-agent did not finish before the deadline") from exc
        except httpx.HTTPError as exc:
            record("connection_error")
            raise UpstreamError(f"writer-agent unreachable: {exc.__class__.__name__}") from exc
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
            record("cancelled" if cancelled else "error")
            raise
        record("error")
        raise UpstreamError("writer-agent closed the stream without a result")
