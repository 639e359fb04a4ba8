"""The base app refuses a body over `max_body_bytes` while reading it, whether or not the
client said how long it is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from podcrew_core.runtime.app import create_service_app
from podcrew_core.runtime.settings import ServiceSettings

LIMIT = 4096
CHUNK = 1024
CHUNKS = 1000  # a body of 250 times the limit


class Question(BaseModel):
    question: str


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def _app() -> FastAPI:
    app = create_service_app(
        title="t",
        version="0",
        lifespan=_lifespan,
        settings=ServiceSettings(max_body_bytes=LIMIT),
    )

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.post("/json", status_code=202)
    async def parsed(question: Question) -> dict[str, str]:
        return {"question": question.question}

    return app


class ChunkedClient:
    """Sends a body in `CHUNKS` pieces with no Content-Length, as a chunked upload does,
    and records how much of it the app pulled and what it answered."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        return {"type": "http.request", "body": self.chunk, "more_body": self.pulled < CHUNKS}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def post(self, app: FastAPI, path: str) -> tuple[int, dict[bytes, bytes], Any]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, self.receive, self.send)
        start = self.sent[0]
        assert start["type"] == "http.response.start"
        body = b"".join(m.get("body", b"") for m in self.sent[1:])
        return start["status"], dict(start["headers"]), json.loads(body)


@pytest.mark.parametrize("path", ["/raw", "/json"])
async def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole(
    path: str,
) -> None:
    # Whitespace: no prefix of it is malformed, so nothing but the size can refuse it.
    client = ChunkedClient(b" " * CHUNK)
    status, headers, problem = await client.post(_app(), path)

    assert status == 413
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert problem["type"].endswith("/payload-too-large")
    assert client.pulled <= LIMIT // CHUNK + 1  # stopped just past the limit
    assert len(client.sent) == 2  # one answer: the app's own was dropped


async def test_a_chunked_body_within_the_limit_is_served() -> None:
    body = json.dumps({"question": "q" * 100}).encode()

    class Small(ChunkedClient):
        async def receive(self) -> dict[str, Any]:
            self.pulled += 1
            return {"type": "http.request", "body": body, "more_body": False}

    status, _, answer = await Small(b"").post(_app(), "/json")
    assert status == 202
    assert answer == {"question": "q" * 100}
