"""`podcrew-writer-agent` / `python -m podcrew_writer`: serve the writer agent."""

from __future__ import annotations

from fastapi import FastAPI

from podcrew_core.runtime.serve import serve
from podcrew_writer.main import create_app
from podcrew_writer.settings import WriterConfig


def app() -> FastAPI:
    """The agent as this process' environment configures it, for an ASGI server's factory
    mode (`uvicorn --factory podcrew_writer.__main__:app`)."""
    return create_app(WriterConfig())


def main() -> None:
    """Read the settings, build the app, then serve until SIGTERM."""
    config = WriterConfig()
    serve(create_app(config), config.service)


if __name__ == "__main__":
    main()
