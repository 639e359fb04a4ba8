"""Calls to the research agents and the writer agent over the shared pooled client.

Each call carries the run's `Hop` and charges back to it the retries the agent reports
spending; a failure is the error the agent answered with, by its meaning (`contracts.problem`).
An agent is one URL (a Kubernetes Service, behind which kube-proxy picks a pod for each new
connection) or several replicas, comma-separated (`runtime.http.Replicas`): a call that
could not reach one (`runtime.resilience.unreachable`) is retried on another within the
run's deadline and retry budget. Both calls may be done twice (an agent keeps no state of a
call), so a connection lost mid-answer is retried too, except once the writer's text has
started to arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
from httpx_sse import EventSource, aconnect_sse

from podcrew_core.contracts.errors import PodcrewError, UpstreamError
from podcrew_core.contracts.hop import Hop
from podcrew_core.contracts.problem import from_problem
from podcrew_core.contracts.schemas import (
    ResearchRequest,
    ResearchResponse,
    WriteDelta,
    WriteRequest,
    WriteResponse,
)
from podcrew_core.runtime.http import (
    Replicas,
    charge_reported,
    hop_retry_wait_s,
    observe_hop,
    post_json,
    transport_error,
)
from podcrew_core.runtime.metrics import HTTP_CLIENT_DURATION, HTTP_CLIENT_REQUESTS
from podcrew_core.runtime.resilience import answer_error
from podcrew_core.runtime.tracing import invoke_agent_span

RESEARCH_AGENT = "research-agent"
WRITER_AGENT = "writer-agent"
PROBE_TIMEOUT_S = 1.0


class _Agent:
    """One agent's replicas, and whether any of them answers its health check."""

    def __init__(self, http: httpx.AsyncClient, base_urls: str, path: str) -> None:
        self.http = http
        self.replicas = Replicas.parse(base_urls, path)
        self._health = [url.removesuffix(path) + "/healthz" for url in self.replicas.urls]

    async def reachable(self) -> bool:
        """Whether at least one replica answers `/healthz`."""
        for url in self._health:
            try:
                response = await self.http.get(url, timeout=PROBE_TIMEOUT_S)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return True
        return False


class ResearchClient(_Agent):
    def __init__(self, http: httpx.AsyncClient, base_urls: str) -> None:
        super().__init__(http, base_urls, "/v1/research")

    async def research(self, body: ResearchRequest, hop: Hop) -> ResearchResponse:
        """Research one sub-question within `hop` (retried as `post_json` retries)."""
        with invoke_agent_span(
            RESEARCH_AGENT,
            remote=True,
            run_id=body.run_id,
            attributes={"gen_ai.request.model": body.model} if body.model else None,
        ):
            response = await post_json(
                self.http,
                self.replicas,
                body,
                ResearchResponse,
                target=RESEARCH_AGENT,
                hop=hop,
                idempotent=True,
            )
        hop.retries.charge(response.retries)
        return response


class _Recorder:
    """Counts and times one writer call like a `post_json` call (target `writer-agent`),
    once, as its last attempt ended (`outcome`)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.outcome = "error"
        self.recorded = False

    def __call__(self, outcome: str | None = None) -> None:
        if not self.recorded:
            self.recorded = True
            HTTP_CLIENT_REQUESTS.labels(WRITER_AGENT, outcome or self.outcome).inc()
            HTTP_CLIENT_DURATION.labels(WRITER_AGENT).observe(time.perf_counter() - self.started)


class WriterClient(_Agent):
    def __init__(self, http: httpx.AsyncClient, base_urls: str) -> None:
        super().__init__(http, base_urls, "/v1/write/stream")

    async def stream(self, body: WriteRequest, hop: Hop) -> AsyncIterator[str | WriteResponse]:
        """Text deltas as the writer produces them, then the final `WriteResponse`.

        Counted and timed like `post_json` calls (target `writer-agent`), to the last event.
        Retried as `post_json` retries until the text starts: once text has been seen, a
        second attempt would repeat it.
        """
        record = _Recorder()
        content = body.model_dump_json()
        attempt = 0
        try:
            while True:
                attempt += 1
                url = self.replicas.pick()
                started = False
                try:
                    async for item in self._attempt(url, content, hop, record):
                        started = True
                        yield item
                    return
                except PodcrewError as error:
                    self.replicas.failed(url, error)
                    delay = None if started else hop_retry_wait_s(error, attempt, hop)
                    if delay is None:
                        raise
                await asyncio.sleep(delay)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
            record("cancelled" if cancelled else None)
            raise

    async def _attempt(
        self, url: str, content: str, hop: Hop, record: _Recorder
    ) -> AsyncIterator[str | WriteResponse]:
        """One streamed write at `url`: its items up to the result, or the error it meant."""
        sent = time.perf_counter()
        try:
            async with aconnect_sse(
                self.http,
                "POST",
                url,
                content=content,
                headers={"content-type": "application/json", **hop.to_headers()},
                timeout=httpx.Timeout(max(0.001, hop.deadline.remaining()), connect=2.0),
            ) as source:
                # For a stream the hop is what it adds before the answer starts.
                observe_hop(WRITER_AGENT, source.response, time.perf_counter() - sent)
                async for item in _items(source, record):
                    if isinstance(item, WriteResponse):
                        self.replicas.answered(url)
                        hop.retries.charge(item.retries)
                        record("ok")  # before the final yield: the consumer stops reading at it
                        yield item
                        return
                    yield item
        except PodcrewError as error:
            charge_reported(hop, error)
            raise
        except httpx.HTTPError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            record.outcome = "timeout" if timed_out else "connection_error"
            raise transport_error(WRITER_AGENT, exc, idempotent=True) from exc
        record.outcome = "error"
        raise UpstreamError(f"{WRITER_AGENT} closed the stream without a result")


async def _items(source: EventSource, record: _Recorder) -> AsyncIterator[str | WriteResponse]:
    """The writer's answer as text deltas and its result; a refusal, or an `error` event (a
    problem, as in any answer), as the error it means."""
    response = source.response
    if response.status_code >= 400:
        record.outcome = f"http_{response.status_code // 100}xx"
        await response.aread()
        raise answer_error(response.status_code, response.content, response.headers)
    async for sse in source.aiter_sse():
        if sse.event == "delta":
            yield WriteDelta.model_validate_json(sse.data).text
        elif sse.event == "done":
            yield WriteResponse.model_validate_json(sse.data)
        elif sse.event == "error":
            record.outcome = "error"
            raise from_problem(None, sse.data)
