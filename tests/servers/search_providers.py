"""Loopback servers that speak the web search providers' documented HTTP APIs, for tests.

Each answers as its provider does, request and answer alike, and refuses what the provider
refuses:

- SearXNG: `GET /search?q=…&format=json`; 403 when the JSON format is not enabled (or another
  format is asked for); `results[]` of `url`, `title`, `content` among SearXNG's other fields.
- Brave Search: `GET /res/v1/web/search?q=…&count=…` with `X-Subscription-Token`; a missing
  or wrong token is 422 `SUBSCRIPTION_TOKEN_INVALID`, a missing `q` 422 `VALIDATION`, both in
  Brave's `ErrorResponse` shape; `web.results[]` of `title`, `url`, `description` (with
  `<strong>` around matched words).
- Tavily: `POST /search` with a JSON body (`query`, `max_results`) and
  `Authorization: Bearer <key>`; a wrong key is 401, a missing query 400, errors as
  `{"detail": {"error": …}}`; `results[]` of `title`, `url`, `content`, `score`.

A test scripts failures ahead (`fail(status, headers)`: the next requests get them, one
each, then normal answers resume), slowness (`delay_s`), and reads what was asked
(`requests`). Used in-process
(`ProviderServer.start`) or as its own process: `python search_providers.py searxng --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "test-search-key"
PAGES: list[dict[str, str]] = [
    {
        "title": "Quibbler maintenance handbook",
        "url": "https://quibbler.example.org/handbook/maintenance",
        "content": "The quibbler must be recalibrated every ninety days by a certified "
        "technician. Recalibration takes about two hours and needs the quibbler offline.",
    },
    {
        "title": "Quibbler release notes",
        "url": "https://quibbler.example.org/releases/4.2",
        "content": "Quibbler 4.2 shortens recalibration to forty minutes and keeps the "
        "quibbler online while it runs.",
    },
    {
        "title": "Not a page",
        "url": "javascript:alert(1)",
        "content": "A quibbler result whose address is no web page, which a client leaves out.",
    },
]
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class ProviderServer:
    """A loopback stand-in for one provider (`searxng`, `brave` or `tavily`)."""

    provider: str
    api_key: str = API_KEY
    pages: list[dict[str, Any]] = field(default_factory=lambda: list(PAGES))
    json_enabled: bool = True
    delay_s: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    _failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    def fail(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (as the provider words it)."""
        self._failures += [(status, headers or {})] * times

    def app(self) -> web.Application:
        """The aiohttp application answering as the provider."""
        app = web.Application()
        routes = {
            "searxng": [web.get("/search", self._searxng)],
            "brave": [web.get("/res/v1/web/search", self._brave)],
            "tavily": [web.post("/search", self._tavily)],
        }
        app.add_routes(routes[self.provider])
        return app

    async def start(self, port: int = 0) -> str:
        """Serve on a loopback port; the base URL a client is configured with."""
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{bound}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> None:
        # A slow provider: the request is recorded once it is answered, or never.
        await asyncio.sleep(self.delay_s)
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.read(),
            )
        )

    def _matches(self, query: str, count: int) -> list[dict[str, Any]]:
        words = set(_WORD.findall(query.lower()))
        # A page matches by any word of its title, address or text, as a search engine's would.
        found = [
            p
            for p in self.pages
            if words & set(_WORD.findall(" ".join(v for v in p.values() if v).lower()))
        ]
        return found[:count]

    def _scripted(self, error: Any) -> web.Response | None:
        if not self._failures:
            return None
        status, headers = self._failures.pop(0)
        return web.json_response(error(status), status=status, headers=headers)

    async def _searxng(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.query.get("format") != "json" or not self.json_enabled:
            return web.Response(status=403, text="Forbidden")
        failed = self._scripted(lambda status: {"error": f"HTTP {status}"})
        if failed is not None:
            return failed
        query = request.query.get("q", "")
        if not query:
            return web.Response(status=400, text="Bad Request")
        results = [
            {**p, "engine": "duckduckgo", "engines": ["duckduckgo"], "score": 1.0}
            for p in self._matches(query, 20)
        ]
        return web.json_response(
            {
                "query": query,
                "number_of_results": len(results),
                "results": results,
                "answers": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        )

    async def _brave(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.headers.get("X-Subscription-Token") != self.api_key:
            return _brave_error(422, "SUBSCRIPTION_TOKEN_INVALID", "The provided token is invalid.")
        failed = self._scripted(lambda status: _brave_body(status, "RATE_LIMITED", "Too many"))
        if failed is not None:
            return failed
        query = request.query.get("q", "")
        count = request.query.get("count", "20")
        if not query or not count.isdigit() or not 1 <= int(count) <= 20:
            return _brave_error(422, "VALIDATION", "Unable to validate request parameter(s)")
        results = [
            {
                "type": "search_result",
                "title": p["title"],
                "url": p["url"],
                "description": _emphasised(p["content"], query),
                "language": "en",
            }
            for p in self._matches(query, int(count))
        ]
        return web.json_response(
            {
                "type": "search",
                "query": {"original": query},
                "web": {"type": "search", "results": results},
            }
        )

    async def _tavily(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401
            )
        failed = self._scripted(lambda status: {"detail": {"error": f"HTTP {status}"}})
        if failed is not None:
            return failed
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return web.json_response({"detail": {"error": "query is required"}}, status=400)
        count = int(body.get("max_results", 5))
        results = [
            {"title": p["title"], "url": p["url"], "content": p["content"], "score": 0.9}
            for p in self._matches(body["query"], count)
        ]
        return web.json_response(
            {"query": body["query"], "answer": None, "results": results, "response_time": 0.1}
        )


def _brave_body(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": "ErrorResponse",
        "error": {"id": "test", "status": status, "code": code, "detail": detail, "meta": {}},
        "time": 0,
    }


def _brave_error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response(_brave_body(status, code, detail), status=status)


def _emphasised(text: str, query: str) -> str:
    """The text with the query's words in `<strong>`, as Brave marks them."""
    words = set(_WORD.findall(query.lower()))
    return " ".join(
        f"<strong>{w}</strong>" if w.lower().strip(".,") in words else w for w in text.split()
    )


async def _serve(provider: str, port: int) -> None:
    server = ProviderServer(provider)
    await server.start(port)
    print(f"serving {provider} on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("provider", choices=["searxng", "brave", "tavily"])
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    asyncio.run(_serve(arguments.provider, arguments.port))
