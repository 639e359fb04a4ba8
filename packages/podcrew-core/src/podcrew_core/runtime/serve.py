"""Run an ASGI app under uvicorn with podcrew's defaults (uvloop, httptools, JSON logs) and
its shutdown sequence.

On SIGTERM (or SIGINT) a service first reports not ready (`/readyz` 503) and keeps serving
for `drain_delay_s`, so load balancers stop sending it traffic; then uvicorn stops
accepting, in-flight requests get `graceful_shutdown_s` to finish (open SSE streams end
with a `stream.closing` event the client resumes from), the lifespan shutdown runs (a
worker hands its unfinished runs back to the queue), and the process exits 0.

A request's head (request line and headers) is bounded by `MAX_HEADER_BYTES`: past it
the client gets 431 and the connection closes. httptools (llhttp) sets no such bound and
uvicorn keeps every header it parses, so without this one request could fill memory
before the app ever sees it; bodies are bounded by the app (`max_body_bytes`).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from podcrew_core.runtime.settings import ServiceSettings

MAX_HEADER_BYTES = 64 * 1024
"""The largest request head (request line and headers) a service reads: room for long
bearer tokens and trace headers, four times h11's default."""

_TOO_LARGE_TEXT = b"Request header fields too large"
_HEADERS_TOO_LARGE = STATUS_LINE[431] + b"".join(
    (
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(_TOO_LARGE_TEXT),
        b"connection: close\r\n\r\n",
        _TOO_LARGE_TEXT,
    )
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request head bounded by `MAX_HEADER_BYTES`.

    Counts every byte received while a head is being read (the chunk that completes a head
    may also carry body bytes, so the count stops there): a head is refused once more than
    the bound has arrived without completing, so at most the bound plus one read is held.
    """

    _in_head = True
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > MAX_HEADER_BYTES
            and not self.transport.is_closing()
        ):
            self.transport.write(_HEADERS_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # what follows is the next request's head
        super().on_message_complete()


def _after_graceful_shutdown(signum: int, _: object) -> None:
    """Uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    would die "by signal" (exit 143). A graceful shutdown is a success: with this handler in
    place as the "previous" one uvicorn restores, the re-raised signal is absorbed and the
    process exits 0, which is what Kubernetes and the launcher read as clean."""


def freeze_startup_heap() -> None:
    """Move what the process built at startup (modules, the app, its clients, the research
    agent's index) out of the garbage collector's sight.

    Those objects live as long as the process, yet every full collection walked them all
    again: under `make bench` one took 40-90 ms in the api and the worker, every minute or
    so. Collected first, so no garbage is kept for good.
    """
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_delay_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_delay_s = drain_delay_s
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan has run: clients, pools, indexes exist
        freeze_startup_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        readiness = getattr(self._app.state, "readiness", None)
        if readiness is not None:
            readiness.draining = True
        if self._draining or self._drain_delay_s <= 0:
            # A second signal, or no drain period: shut down now.
            super().handle_exit(sig, frame)
            return
        self._draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().handle_exit(sig, frame)
            return
        loop.call_later(self._drain_delay_s, super().handle_exit, sig, frame)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_graceful_shutdown)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=round(settings.graceful_shutdown_s),
        # uvicorn's default (5 s) equals httpx's and aiohttp's idle expiry: a request sent
        # on a pooled connection as the server closed it failed with a reset, in `make bench`
        # between two levels (`research-agent unreachable: ReadError`).
        timeout_keep_alive=settings.keep_alive_s,
        server_header=False,
    )
    _Server(config, app, settings.drain_delay_s).run()
