"""The web console at `/console`: static files (HTML, CSS, JavaScript modules; no build step)
that call only the public run API, from the browser, with the user's API key.

Every response under `/console` carries a Content-Security-Policy that lets the page load
its own files and talk to its own origin and nothing else: no inline script, no third-party
host, no framing. The console is written so that this policy holds it (its scripts are
files, it builds the DOM from text rather than injecting HTML), so a report or question
that smuggles markup cannot run script in the page that holds the key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONSOLE_PATH = "/console"
STATIC_DIR = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The page's address can name a run; a click on a source's link must not hand it on.
    "Referrer-Policy": "no-referrer",
    # The console changes with the server; a browser must not keep an old copy against
    # a newer API.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """The console's files, each answer with the console's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """Serve the console at `/console/` (`/console` redirects there)."""
    app.mount(CONSOLE_PATH, ConsoleFiles(directory=STATIC_DIR, html=True), name="console")
