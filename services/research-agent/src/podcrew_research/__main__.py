"""`podcrew-research-agent` / `python -m podcrew_research`: serve the research agent."""

from __future__ import annotations

from podcrew_core.runtime.serve import serve
from podcrew_research.main import create_app
from podcrew_research.settings import ResearchSettings


def main() -> None:
    """Build the settings and the app, then serve until SIGTERM."""
    settings = ResearchSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
