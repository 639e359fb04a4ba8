"""The internal HTTP client's one deviation from httpx's normal use: httpx's API over
aiohttp's HTTP/1.1 stack (the `httpx-aiohttp` transport), instead of httpx's own.

Why: httpx's connection pool costs several times aiohttp's CPU per request, on every call
between podcrew's services (a run makes four: three research calls and the writer's
stream). `uv run python -m bench.hopbench` (2026-12-06, this machine, nothing else running)
measured client CPU per call 0.43 ms for httpx alone and 0.22 ms for this client one call at
a time, 0.86 and 0.19 ms ten at once: 0.8-2.7 ms per run, 4-14 % of a run's CPU in
`make bench` (18-23 ms per run at 500 and 10 concurrent runs). Round 1 measured the same
change in the stack: the worker's CPU 18.5 -> 13.5 ms per run and its hop to a research
agent 13.2 -> 4.4 ms (docs/benchmarks.md, "Round 1 experiments"). Callers keep httpx's
API, its typed errors and its OpenTelemetry instrumentation; only this module knows the
transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def _unmasked(exc: httpx.TransportError) -> httpx.TransportError:
    """The httpx error httpx itself would have raised for an aiohttp connection failure.

    httpx-aiohttp 0.2.0 maps every `aiohttp.ClientConnectionError` that is not a timeout to
    `httpx.ConnectTimeout`, so a refused connection would read as "did not answer before the
    deadline" (the anthropic SDK's vendored copy fixes the same entry). Timeouts keep their
    type; a refused connect is `ConnectError`, a peer that closed without answering
    `RemoteProtocolError` (both retried, as with httpx's own transport), a reset `ReadError`.
    """
    cause = exc.__cause__
    if (
        not isinstance(exc, httpx.ConnectTimeout)
        or not isinstance(cause, aiohttp.ClientConnectionError)
        or isinstance(cause, aiohttp.ServerTimeoutError)
    ):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause))
    return httpx.ReadError(str(cause))


class _UnmaskedStream(httpx.AsyncByteStream):
    """A response body whose connection errors are reported as httpx would report them."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.ConnectTimeout as exc:
            raise _unmasked(exc) from exc.__cause__

    async def aclose(self) -> None:
        await self._inner.aclose()


class AiohttpUnderHttpx(AiohttpTransport):
    """`httpx-aiohttp`'s transport, its connection errors reported as httpx reports them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            raise _unmasked(exc) from exc.__cause__
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _UnmaskedStream(response.stream)
        return response
