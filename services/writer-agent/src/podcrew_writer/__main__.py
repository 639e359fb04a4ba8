"""`podcrew-writer-agent` / `python -m podcrew_writer`: serve the writer agent."""

from __future__ import annotations

from podcrew_core.runtime.serve import serve
from podcrew_writer.main import create_app
from podcrew_writer.settings import WriterSettings


def main() -> None:
    settings = WriterSettings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
