"""Run an ASGI app under uvicorn with podcrew's defaults (uvloop, httptools, JSON logs)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from podcrew_core.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
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
