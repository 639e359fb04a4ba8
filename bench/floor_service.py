"""The gateway and agent processes of `python -m bench.floor`: a podcrew run's shape on
podcrew's stacks with none of its code (see bench/floor.py).

`python -m bench.floor_service ROLE PORT SIMULATOR_URL AGENT_URL`; both roles serve every
route, the role only names the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import orjson
import uvicorn
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.hopbench import REQUEST

BODY = orjson.dumps(REQUEST)
STREAM_BODY = orjson.dumps({**REQUEST, "stream": True})
POOL = 4096


class Question(BaseModel):
    question: str


class Findings(BaseModel):
    text: str


class Floor:
    """The process's clients and what it measured since the last `/stats`."""

    def __init__(self, simulator: str, agent: str) -> None:
        limits = httpx2.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        self.http = anthropic.DefaultAioHttpClient(
            limits=limits, timeout=httpx2.Timeout(60, connect=5)
        )
        self.sdk = anthropic.AsyncAnthropic(
            base_url=simulator, api_key="simulated", max_retries=0, http_client=self.http
        )
        internal = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        self.internal = httpx.AsyncClient(
            limits=internal, timeout=60, transport=AiohttpTransport(limits=internal)
        )
        self.agent = agent
        self.llm_calls: list[tuple[str, float]] = []  # (simulator's request id, seconds)
        self.hops: list[float] = []  # internal request: caller's time minus the app's

    async def llm(self) -> None:
        started = time.perf_counter()
        response = await self.sdk.post("/v1/messages", cast_to=httpx2.Response, content=BODY)
        orjson.loads(response.content)
        self.llm_calls.append((response.headers["request-id"], time.perf_counter() - started))

    async def llm_stream(self) -> str:
        response = await self.sdk.post(
            "/v1/messages", cast_to=httpx2.Response, content=STREAM_BODY, stream=True
        )
        parts = []
        try:
            async for sse in anthropic.AsyncStream.raw_events(response):
                if sse.data:
                    event = orjson.loads(sse.data)
                    if event["type"] == "content_block_delta" and "text" in event["delta"]:
                        parts.append(event["delta"]["text"])
        finally:
            await response.aclose()
        return "".join(parts)

    async def post(self, path: str, body: Question) -> Findings:
        sent = time.perf_counter()
        response = await self.internal.post(
            f"{self.agent}{path}",
            content=body.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        self.hops.append(time.perf_counter() - sent - float(response.headers["x-app-s"]))
        return Findings.model_validate_json(response.content)

    async def aclose(self) -> None:
        await self.internal.aclose()
        await self.sdk.close()
        await self.http.aclose()


class Timing:
    """The app's own time in a response header, as podcrew's raw ASGI middleware states it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = b"%.6f" % (time.perf_counter() - started)
                message["headers"] = [*message.get("headers", ()), (b"x-app-s", took)]
            await send(message)

        await self.app(scope, receive, timed)


def create_app(simulator: str, agent: str) -> FastAPI:
    floor: Floor | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal floor
        floor = Floor(simulator, agent)
        yield
        await floor.aclose()

    def current() -> Floor:
        assert floor is not None
        return floor

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(Timing)

    @app.post("/research")
    async def research(body: Question) -> Findings:
        await current().llm()  # the tool-use turn
        await current().llm()  # the findings turn
        return Findings(text=body.question)

    @app.post("/write")
    async def write(body: Question) -> Findings:
        return Findings(text=await current().llm_stream())

    @app.post("/run")
    async def run(body: Question) -> Findings:
        f = current()
        await f.llm()  # the plan
        found = await asyncio.gather(
            *(f.post("/research", Question(question=f"{body.question} {i}")) for i in range(3))
        )
        return await f.post("/write", Question(question=" ".join(x.text for x in found)))

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        f = current()
        out = {"llm": f.llm_calls, "hop": f.hops}
        f.llm_calls, f.hops = [], []
        return out

    return app


def main() -> None:
    _role, port, simulator, agent = sys.argv[1:5]
    uvicorn.run(
        create_app(simulator, agent),
        host="127.0.0.1",
        port=int(port),
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
