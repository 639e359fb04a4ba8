"""`podcrew-orchestrator api|worker`: one package, two modes."""

from __future__ import annotations

import argparse

from podcrew_core.runtime.serve import serve
from podcrew_orchestrator.main import create_app, create_worker_app
from podcrew_orchestrator.settings import OrchestratorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="podcrew-orchestrator", description=__doc__)
    parser.add_argument("mode", choices=["api", "worker"], help="which half of the orchestrator")
    args = parser.parse_args(argv)
    settings = OrchestratorSettings()
    if args.mode == "api":
        serve(create_app(settings), settings)
    else:
        serve(
            create_worker_app(settings), settings.model_copy(update={"port": settings.worker_port})
        )


if __name__ == "__main__":
    main()
