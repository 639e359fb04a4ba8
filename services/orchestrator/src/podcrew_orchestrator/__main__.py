"""`podcrew-orchestrator api|worker`: one package, two modes."""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from podcrew_core.runtime.serve import serve
from podcrew_orchestrator.main import create_app, create_worker_app
from podcrew_orchestrator.settings import OrchestratorConfig


def api() -> FastAPI:
    """api mode as this process' environment configures it, for an ASGI server's factory
    mode (`uvicorn --factory podcrew_orchestrator.__main__:api`)."""
    return create_app(OrchestratorConfig())


def worker() -> FastAPI:
    """worker mode as this process' environment configures it (`--factory …:worker`)."""
    return create_worker_app(OrchestratorConfig())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="podcrew-orchestrator", description=__doc__)
    parser.add_argument("mode", choices=["api", "worker"], help="which half of the orchestrator")
    args = parser.parse_args(argv)
    config = OrchestratorConfig()
    settings = config.service
    if args.mode == "api":
        serve(create_app(config), settings)
    else:
        serve(create_worker_app(config), settings.model_copy(update={"port": settings.worker_port}))


if __name__ == "__main__":
    main()
