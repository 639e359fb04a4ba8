"""Fixtures for the orchestrator's tests: a real redis-server of the test's own, which a test
may stop and start again (its data kept, as a restarted production Redis keeps it), and
agents answering through an in-memory transport."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from podcrew_cli.stack import LOOPBACK, free_port, redis_server_argv, wait_for_redis
from podcrew_core.contracts.schemas import (
    Finding,
    ResearchRequest,
    ResearchResponse,
    Source,
    SourceRef,
    Usage,
    WriteRequest,
    WriteResponse,
)
from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings
from podcrew_orchestrator.clients.agents import ResearchClient, WriterClient
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.pipeline import Pipeline


class RedisServer:
    """A redis-server on a free loopback port; its append-only file survives a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = redis_server_argv(self.port, self.data_dir, "--appendfsync", "always")
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        process = self._process
        wait_for_redis(self.port, lambda: process.poll() is None)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """The client the services use (retries, metrics), on the test's redis-server."""
    client = create_redis(RedisSettings(url=SecretStr(redis_server.url)))
    yield client
    await client.aclose()


@pytest.fixture
async def make_hub(redis: Redis) -> AsyncIterator[Callable[..., EventHub]]:
    """Builds event hubs (keys prefixed `test`) on the test's Redis; closed at the end."""
    hubs: list[EventHub] = []

    def build(**options: int) -> EventHub:
        hubs.append(EventHub(redis, Keys("test"), **options))
        return hubs[-1]

    yield build
    for hub in hubs:
        await hub.aclose()


@pytest.fixture
def agents() -> Callable[..., httpx.MockTransport]:
    """Builds research and writer agents behind an in-memory transport. `research_s`: how
    long each research call takes; `on_research(run_id, what)` hears each call start
    (`started`) and end (`finished` or `cancelled`); `deltas`: the writer's text deltas."""

    def build(
        *,
        research_s: float = 0.0,
        on_research: Callable[[str, str], None] | None = None,
        deltas: tuple[str, ...] = ("report ", "[1]\n"),
    ) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/research":
                body = ResearchRequest.model_validate_json(request.content)
                if on_research is not None:
                    on_research(body.run_id, "started")
                try:
                    await asyncio.sleep(research_s)
                except asyncio.CancelledError:
                    if on_research is not None:
                        on_research(body.run_id, "cancelled")
                    raise
                if on_research is not None:
                    on_research(body.run_id, "finished")
                response = ResearchResponse(
                    sub_question=body.sub_question,
                    findings=[Finding(claim="a claim", source=Source(id="kb:1", title="T"))],
                    tool_calls=[],
                    steps=1,
                    usage=Usage(input_tokens=10, output_tokens=5, llm_calls=1),
                    model="m",
                )
                return httpx.Response(200, content=response.model_dump_json())
            write = WriteRequest.model_validate_json(request.content)
            done = WriteResponse(
                report="".join(deltas),
                sources=[SourceRef(number=1, source=write.sections[0].findings[0].source)],
                usage=Usage(input_tokens=7, output_tokens=3, llm_calls=1),
                model="w",
            )
            sse = "".join(
                f"event: delta\ndata: {json.dumps({'text': text})}\n\n" for text in deltas
            )
            sse += f"event: done\ndata: {done.model_dump_json()}\n\n"
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

        return httpx.MockTransport(handle)

    return build


@pytest.fixture
async def make_pipeline(
    agents: Callable[..., httpx.MockTransport],
) -> AsyncIterator[Callable[..., Pipeline]]:
    """Builds pipelines on the offline model and the agents `agents(**options)` builds;
    their clients are closed at the end."""
    clients: list[httpx.AsyncClient] = []

    def build(**agent_options: Any) -> Pipeline:
        clients.append(httpx.AsyncClient(transport=agents(**agent_options)))
        return Pipeline(
            provider=OfflineProvider(),
            research=ResearchClient(clients[-1], "http://research"),
            writer=WriterClient(clients[-1], "http://writer"),
        )

    yield build
    for client in clients:
        await client.aclose()
