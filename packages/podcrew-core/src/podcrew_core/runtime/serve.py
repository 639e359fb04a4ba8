"""Run an ASGI app under uvicorn with podcrew's defaults (uvloop, httptools, JSON logs) and
its shutdown sequence.

On SIGTERM (or SIGINT) a service first reports not ready (`/readyz` 503) and keeps serving
for `drain_delay_s`, so load balancers stop sending it traffic; then uvicorn stops
accepting, in-flight requests get `graceful_shutdown_s` to finish (open SSE streams end
with a `stream.closing` event the client resumes from), the lifespan shutdown runs (a
worker hands its unfinished runs back to the queue), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from podcrew_core.runtime.settings import ServiceSettings


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
        http="httptools",
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
