"""Claude on Bedrock and Vertex: the request each SDK client really sends (path with the
platform's model id, body, authentication) against a loopback server that records it, and
the answer read back (text, tool input, usage, streamed deltas) under podcrew's model name.
No network: botocore signs with static credentials from the environment, Vertex gets a fixed
token."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from anthropic._constants import ANTHROPIC_API_VERSION

from podcrew_core.llm import LLMRequest, LLMSettings, Message, Stage, ToolSpec, create_provider
from podcrew_core.llm.anthropic import AnthropicProvider
from podcrew_core.llm.platforms import platform_model
from podcrew_core.llm.types import StreamEnd, TextDelta

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "platform-specific-id",
    "content": [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "tu_1", "name": "search", "input": {"q": "x"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 11, "output_tokens": 7, "cache_read_input_tokens": 3},
}
EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]


def _header(name: str, value: str) -> bytes:
    raw = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw


def aws_event(event: dict[str, Any]) -> bytes:
    """One frame of an AWS event stream carrying a Bedrock `chunk` (the event as base64)."""
    payload = orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode()})
    headers = (
        _header(":event-type", "chunk")
        + _header(":content-type", "application/json")
        + _header(":message-type", "event")
    )
    prelude = struct.pack(">II", 16 + len(headers) + len(payload), len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack(">I", binascii.crc32(body))


class Recorder:
    """A loopback server that records every request and answers as the platform would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append(
            (request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        path = request.path
        if path.endswith("/invoke") or path.endswith(":rawPredict"):
            return web.Response(body=orjson.dumps(MESSAGE), content_type="application/json")
        response = web.StreamResponse()
        if path.endswith("invoke-with-response-stream"):
            response.content_type = "application/vnd.amazon.eventstream"
            await response.prepare(request)
            for event in EVENTS:
                await response.write(aws_event(event))
        else:
            response.content_type = "text/event-stream"
            await response.prepare(request)
            for event in EVENTS:
                await response.write(
                    f"event: {event['type']}\ndata: {orjson.dumps(event).decode()}\n\n".encode()
                )
        await response.write_eof()
        return response


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


def _request() -> LLMRequest:
    return LLMRequest(
        stage=Stage.RESEARCH,
        model="claude-haiku-4-5",
        system="You research.",
        messages=[Message(role="user", content="What is a generator?")],
        tools=[ToolSpec(name="search", description="Search.", input_schema={"type": "object"})],
        max_tokens=256,
    )


@pytest.fixture
def bedrock_env(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    for name in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("ANTHROPIC_BEDROCK_BASE_URL", recorder.url)


@pytest.fixture
def vertex_env(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    monkeypatch.setenv("ANTHROPIC_VERTEX_BASE_URL", f"{recorder.url}/v1")


BEDROCK_ID = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/bedrock/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$"
)


def _bedrock(**extra: Any) -> LLMSettings:
    return LLMSettings(
        provider="bedrock", bedrock_region="eu-west-1", bedrock_model_prefix="us.", **extra
    )


def _vertex() -> LLMSettings:
    return LLMSettings(
        provider="vertex",
        vertex_region="us-east5",
        vertex_project="proj-1",
        vertex_access_token="fake-token",  # type: ignore[arg-type]
    )


def _check_body(body: dict[str, Any]) -> None:
    assert "model" not in body  # the model travels in the path
    assert "stream" not in body
    assert body["anthropic_version"] == ANTHROPIC_API_VERSION  # the platforms want it in the body
    assert body["max_tokens"] == 256
    assert body["messages"] == [{"role": "user", "content": "What is a generator?"}]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.usefixtures("bedrock_env")
async def test_bedrock_invoke_is_signed_and_names_the_model_in_the_path(
    recorder: Recorder,
) -> None:
    provider = AnthropicProvider(_bedrock(), name="bedrock", platform="bedrock")
    try:
        response = await provider.complete(_request())
    finally:
        await provider.aclose()
    path, headers, body = recorder.requests[0]
    assert path == f"/model/{BEDROCK_ID}/invoke"
    assert SIGV4.match(headers["authorization"])
    assert "x-amz-date" in headers
    _check_body(body)
    assert response.model == "claude-haiku-4-5"  # priced and metered under podcrew's name
    assert response.text() == "Hello"
    assert response.tool_uses()[0].input == {"q": "x"}
    assert response.usage.cache_read_input_tokens == 3


@pytest.mark.usefixtures("bedrock_env")
async def test_bedrock_stream_decodes_the_aws_event_stream(recorder: Recorder) -> None:
    provider = AnthropicProvider(_bedrock(), name="bedrock", platform="bedrock")
    try:
        events = [e async for e in provider.stream(_request())]
    finally:
        await provider.aclose()
    path, headers, body = recorder.requests[0]
    assert path == f"/model/{BEDROCK_ID}/invoke-with-response-stream"
    assert SIGV4.match(headers["authorization"])
    _check_body(body)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.response.text() == "Hello"
    assert end.response.usage.output_tokens == 9
    assert end.response.model == "claude-haiku-4-5"


@pytest.mark.usefixtures("vertex_env")
async def test_vertex_raw_predict_path_body_and_bearer_token(recorder: Recorder) -> None:
    provider = AnthropicProvider(_vertex(), name="vertex", platform="vertex")
    try:
        response = await provider.complete(_request())
        events = [e async for e in provider.stream(_request())]
    finally:
        await provider.aclose()
    model_path = "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models"
    (path, headers, body), (stream_path, stream_headers, stream_body) = recorder.requests
    assert path == f"{model_path}/claude-haiku-4-5@20251001:rawPredict"
    assert stream_path == f"{model_path}/claude-haiku-4-5@20251001:streamRawPredict"
    assert headers["authorization"] == stream_headers["authorization"] == "Bearer fake-token"
    assert stream_body.pop("stream") is True  # Vertex keeps the flag in the body
    for sent in (body, stream_body):
        _check_body(sent)
    assert response.model == "claude-haiku-4-5"
    assert response.tool_uses()[0].name == "search"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello"


def test_model_ids_map_per_platform_with_overrides_and_pass_through() -> None:
    settings = _bedrock(platform_models={"claude-opus-4-5": "arn:aws:bedrock:profile/x"})
    assert platform_model("bedrock", "claude-sonnet-4-5", settings) == (
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    )
    assert platform_model("vertex", "claude-sonnet-4-5", settings) == "claude-sonnet-4-5@20250929"
    assert platform_model("bedrock", "claude-opus-4-5", settings) == "arn:aws:bedrock:profile/x"
    assert platform_model("vertex", "my-own-model@1", settings) == "my-own-model@1"


@pytest.mark.usefixtures("bedrock_env")
async def test_the_configured_provider_reports_the_platform(recorder: Recorder) -> None:
    provider = create_provider(_bedrock())
    try:
        assert provider.name == "bedrock"
    finally:
        await provider.aclose()
    assert recorder.requests == []
