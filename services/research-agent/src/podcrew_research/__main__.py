"""`podcrew-research-agent` / `python -m podcrew_research`: serve the research agent."""

from __future__ import annotations

from fastapi import FastAPI

from podcrew_core.runtime.serve import serve
from podcrew_research.main import create_app
from podcrew_research.settings import ResearchConfig


def app() -> FastAPI:
    """The agent as this process' environment configures it, for an ASGI server's factory
    mode (`uvicorn --factory podcrew_research.__main__:app`)."""
    return create_app(ResearchConfig())


def main() -> None:
    """Read the settings, build the app, then serve until SIGTERM."""
    config = ResearchConfig()
    serve(create_app(config), config.service)


if __name__ == "__main__":
    main()
