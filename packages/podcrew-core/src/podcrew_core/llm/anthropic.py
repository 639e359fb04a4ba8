"""Claude through the official `anthropic` SDK (`AsyncAnthropic`).

The SDK's own retries are off (`max_retries=0`): podcrew retries in `ResilientProvider`,
where the run's deadline and retry budget and the circuit breaker are known. Each call's
timeout is the smaller of `call_timeout_s` and the time the run has left. System prompts
and tool definitions carry `cache_control`, so repeated prefixes are read from the prompt
cache.

The SDK sends over aiohttp (`anthropic.DefaultAioHttpClient`, the `aiohttp` extra), whose
HTTP stack costs a fraction of httpx2's CPU per request.

This module holds the provider's one deviation from the SDK's normal API, and no other
module does: the SDK builds and sends each request (through its documented `client.post`,
with the body encoded by orjson) and raises its typed errors for error statuses, but the
answer is read as the API's JSON (`from_json`; for a stream, the SDK's SSE decoder and
`StreamedMessage`, which puts the message together as the SDK's accumulator does) instead
of `messages.create` / `messages.stream`, which build the SDK's models of the message, of
every stream event, and of the whole message again after every delta. What is read is the
same: text, tool input, stop reason and every usage count. `uv run python -m bench.sdkbench
--calls 1000` (2026-12-06, this machine) measured client CPU per call, normal API against
this module: a research turn 0.55-0.64 against 0.36-0.37 ms, a streamed report 3.3-3.9
against 0.69-0.71 ms. A run makes seven such turns and one report: 3.9-5.2 ms per run,
17-29 % of a run's CPU in `make bench` (18-23 ms).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anthropic
import httpx2
import orjson
from pydantic import ValidationError

from podcrew_core.contracts.errors import (
    DeadlineExceeded,
    LLMError,
    LLMOverloaded,
    LLMRateLimited,
    LLMRejected,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
)
from podcrew_core.contracts.schemas import Usage
from podcrew_core.llm.platforms import Platform, PlatformClient, platform_client, platform_model
from podcrew_core.llm.ratelimit_headers import parse_limits
from podcrew_core.llm.settings import LLMSettings
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    OutputBlock,
    StreamEnd,
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
)
from podcrew_core.runtime.scope import time_left
from podcrew_core.runtime.tracing import tracing_enabled

_CACHE = {"type": "ephemeral"}
_MIN_CALL_S = 0.05
_MESSAGES_PATH = "/v1/messages"
_STOP_REASONS = {"end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal"}


def _retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds form), as the SDK reads them."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            continue
    return None


def map_error(exc: anthropic.APIError) -> LLMError:  # noqa: PLR0911 - one branch per meaning
    """SDK exceptions → podcrew's errors by meaning (which ones a retry can fix)."""
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMTimeout("the LLM call timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMUnavailable(f"cannot reach the LLM endpoint: {exc.__class__.__name__}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        after = _retry_after(exc.response.headers)
        detail = f"the LLM provider answered {status}: {exc.message}"[:500]
        if status == 429:
            return LLMRateLimited(detail, upstream_status=status, retry_after_s=after)
        if status == 529:
            return LLMOverloaded(detail, upstream_status=status, retry_after_s=after)
        if status >= 500 or status in (408, 409):
            return LLMServerError(detail, upstream_status=status, retry_after_s=after)
        return LLMRejected(detail, upstream_status=status)
    # A mid-stream `error` event or an undecodable response: the SDK does not retry these,
    # and neither do we — the call may have had effects we cannot see.
    return LLMError(f"the LLM call failed: {exc}"[:500])


def _stream_error(data: str, response: httpx2.Response) -> anthropic.APIStatusError:
    try:
        body: object = orjson.loads(data)
        detail = f"{body}"
    except orjson.JSONDecodeError:
        body, detail = data, data or f"Error code: {response.status_code}"
    return anthropic.APIStatusError(detail, response=response, body=body)


def to_params(request: LLMRequest) -> dict[str, Any]:
    """podcrew's request → Messages API parameters, with cache breakpoints on the stable
    prefix (tool definitions, then the system prompt)."""
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": [{"type": "text", "text": request.system, "cache_control": _CACHE}],
        "messages": [
            {
                "role": m.role,
                "content": m.content
                if isinstance(m.content, str)
                else [b.model_dump() for b in m.content],
            }
            for m in request.messages
        ],
    }
    if request.tools:
        tools = [t.model_dump() for t in request.tools]
        tools[-1]["cache_control"] = _CACHE
        params["tools"] = tools
    if request.tool_choice is not None:
        params["tool_choice"] = request.tool_choice.model_dump(exclude_none=True)
    return params


def from_json(message: dict[str, Any], latency_s: float) -> LLMResponse:
    """A Messages API `message` object (as JSON) → podcrew's response. Content blocks other
    than text and tool use (thinking, server tools) are left out."""
    try:
        content: list[OutputBlock] = []
        for block in message["content"]:
            kind = block["type"]
            if kind == "text":
                content.append(TextBlock(text=block["text"]))
            elif kind == "tool_use":
                content.append(
                    ToolUseBlock(id=block["id"], name=block["name"], input=block["input"])
                )
        usage = message["usage"]
        stop = message.get("stop_reason")
        return LLMResponse(
            model=message["model"],
            content=content,
            stop_reason=stop if stop in _STOP_REASONS else "end_turn",
            usage=Usage(
                input_tokens=usage["input_tokens"],
                output_tokens=usage["output_tokens"],
                cache_creation_input_tokens=usage.get("cache_creation_input_tokens") or 0,
                cache_read_input_tokens=usage.get("cache_read_input_tokens") or 0,
                llm_calls=1,
            ),
            latency_s=latency_s,
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise LLMError(f"the LLM sent a message podcrew cannot read: {exc!r}"[:500]) from exc


_USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class StreamedMessage:
    """A message put together from its stream's events (as JSON), as the SDK's accumulator
    does: text and tool input by content block, the model and usage from `message_start`,
    then the stop reason and the counts of `message_delta`, which are cumulative, so they
    replace the earlier ones (a count it leaves out or sends as null keeps its value)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.blocks: list[dict[str, Any]] = []
        self.parts: list[list[str]] = []  # per block: its text, or its tool input's JSON

    def add(self, event: dict[str, Any]) -> str | None:
        """Take one event in; the text it adds to a text block, if any."""
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            index = event["index"]
            if delta["type"] == "text_delta" and self.blocks[index]["type"] == "text":
                text: str = delta["text"]
                self.parts[index].append(text)
                return text
            if delta["type"] == "input_json_delta" and self.blocks[index]["type"] == "tool_use":
                self.parts[index].append(delta["partial_json"])
        elif kind == "content_block_start":
            block = dict(event["content_block"])
            self.blocks.append(block)
            self.parts.append([block.pop("text", "")] if block["type"] == "text" else [])
        elif kind == "message_start":
            self.message = dict(event["message"])
            self.message["usage"] = dict(self.message.get("usage") or {})
        elif kind == "message_delta" and self.message is not None:
            self.message["stop_reason"] = event["delta"].get("stop_reason")
            usage = self.message["usage"]
            for name, count in (event.get("usage") or {}).items():
                if count is not None and name in _USAGE_COUNTS:
                    usage[name] = count
        return None

    def response(self, latency_s: float) -> LLMResponse:
        if self.message is None:
            raise LLMError("the LLM stream ended before its message started")
        for block, parts in zip(self.blocks, self.parts, strict=True):  # blocks are copies
            if block["type"] == "text":
                block["text"] = "".join(parts)
            elif block["type"] == "tool_use" and parts:
                try:
                    block["input"] = orjson.loads("".join(parts))
                except orjson.JSONDecodeError as exc:
                    raise LLMError(
                        f"the model streamed invalid JSON input for tool {block.get('name')}"
                    ) from exc
        return from_json({**self.message, "content": self.blocks}, latency_s)


class AnthropicProvider:
    name = "anthropic"

    def __init__(
        self,
        settings: LLMSettings,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "anthropic",
        platform: Platform | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._platform = platform
        self._timeout_s = settings.call_timeout_s
        self._connect_s = settings.connect_timeout_s
        self._http = anthropic.DefaultAioHttpClient(
            limits=httpx2.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            # Each call passes its own timeout (`_timeout`); this only backs it up.
            timeout=httpx2.Timeout(self._timeout_s, connect=self._connect_s),
            follow_redirects=False,  # as httpx2's own client: an API endpoint never redirects
        )
        self._client: anthropic.AsyncAnthropic | PlatformClient
        if platform is not None:
            self._client = platform_client(
                platform, settings, self._http, tracing=tracing_enabled()
            )
        else:
            # api_key/base_url None → the SDK reads ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL.
            self._client = anthropic.AsyncAnthropic(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                http_client=self._http,
                # Without podcrew's tracing no span can be recorded or carried on, yet the SDK
                # would still build each call's span attributes; with it, the SDK's spans stay.
                open_telemetry=None if tracing_enabled() else False,
            )

    def _body(self, params: dict[str, Any]) -> dict[str, Any]:
        """How a request's parameters go to `client.post`: encoded here by orjson for the
        Anthropic API; as parameters for a platform's client, which moves the model (and
        Bedrock the stream flag) from the body into the URL and adds `anthropic_version`."""
        if self._platform is None:
            return {"content": orjson.dumps(params)}
        params["model"] = platform_model(self._platform, params["model"], self._settings)
        return {"body": params}

    def _named(self, response: LLMResponse, request: LLMRequest) -> LLMResponse:
        """A platform answers with its own model id; podcrew prices, meters and logs the
        call under the model it asked for, as with the Anthropic API."""
        if self._platform is None:
            return response
        return response.model_copy(update={"model": request.model})

    @property
    def client(self) -> anthropic.AsyncAnthropic | PlatformClient:
        """The SDK client, for the APIs beyond Messages (`podcrew_core.llm.batch`)."""
        return self._client

    def timeout(self) -> httpx2.Timeout:
        """One request's timeout: `call_timeout_s`, or what the hop has left if less."""
        budget = time_left(self._timeout_s)
        # Below the minimum only because the hop's deadline is near (the setting itself may
        # be shorter, and is honoured).
        if budget < min(_MIN_CALL_S, self._timeout_s):
            raise DeadlineExceeded("no time left for an LLM call")
        return httpx2.Timeout(budget, connect=min(self._connect_s, budget))

    async def complete(self, request: LLMRequest) -> LLMResponse:
        timeout = self.timeout()
        started = time.perf_counter()
        try:
            # The SDK's documented call for a request of one's own, given the body as bytes:
            # `messages.create` would deep-copy the parameters and encode them with the
            # standard library's JSON (about a fifth of the client's CPU per call,
            # `bench.hopbench`). Headers, authentication, timeout and typed errors stay the SDK's.
            raw = await self._client.post(
                _MESSAGES_PATH,
                cast_to=httpx2.Response,
                options={"timeout": timeout},
                **self._body(to_params(request)),
            )
            body = raw.content
        except anthropic.APIError as exc:
            raise map_error(exc) from exc
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise LLMError("the LLM answered with a body that is not JSON") from exc
        response = self._named(from_json(message, time.perf_counter() - started), request)
        response.provider_limits = parse_limits(raw.headers)
        return response

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        timeout = self.timeout()
        started = time.perf_counter()
        message = StreamedMessage()
        params = to_params(request)
        params["stream"] = True
        try:
            # As in `complete`; `stream=True` has the SDK hand over the response unread.
            response = cast(
                httpx2.Response,
                await self._client.post(
                    _MESSAGES_PATH,
                    cast_to=httpx2.Response,
                    options={"timeout": timeout},
                    stream=True,
                    **self._body(params),
                ),
            )
            # The client's own decoder: server-sent events, or Bedrock's AWS event stream.
            decoder = self._client._make_sse_decoder()
            try:
                async for sse in decoder.aiter_bytes(response.aiter_bytes()):
                    # What the SDK's own stream skips, and its `error` event, raised as the
                    # SDK raises it (a status error with the stream's status, 200).
                    if sse.event is None or sse.event == "ping":
                        continue
                    if sse.event == "error":
                        raise _stream_error(sse.data, response)
                    if not sse.data:
                        continue
                    text = message.add(orjson.loads(sse.data))
                    if text is not None:
                        yield TextDelta(text=text)
            finally:  # also when the consumer stops early
                await response.aclose()
        except anthropic.APIError as exc:
            raise map_error(exc) from exc
        except httpx2.HTTPError as exc:  # a connection dropped mid-stream
            raise LLMUnavailable(f"the LLM stream broke: {exc.__class__.__name__}") from exc
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"the LLM sent a stream event podcrew cannot read: {exc!r}") from exc
        final = self._named(message.response(time.perf_counter() - started), request)
        final.provider_limits = parse_limits(response.headers)
        yield StreamEnd(response=final)

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()
