"""Run an ASGI app under uvicorn with podcrew's defaults (uvloop, httptools, JSON logs)."""

from __future__ import annotations

import signal

import uvicorn
from fastapi import FastAPI

from podcrew_core.settings import ServiceSettings


def _after_graceful_shutdown(signum: int, _: object) -> None:
    """Uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    would die "by signal" (exit 143). A graceful shutdown is a success: with this handler in
    place as the "previous" one uvicorn restores, the re-raised signal is absorbed and the
    process exits 0, which is what Kubernetes and the launcher read as clean."""


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _after_graceful_shutdown)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=round(settings.graceful_shutdown_s),
        server_header=False,
    )
