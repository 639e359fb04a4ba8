"""The web search providers `web_search` can be pointed at, each speaking its documented HTTP
API: how a query becomes a request, and how an answer becomes results.

- SearXNG (self-hosted): `GET {base}/search?q=…&format=json`, results `results[]` with
  `title`, `url`, `content`. The instance must list `json` under `search.formats`, or it
  answers 403.
- Brave Search: `GET {base}/res/v1/web/search?q=…&count=…` with the key in the
  `X-Subscription-Token` header, results `web.results[]` with `title`, `url`,
  `description` (which carries `<strong>` markup around the matched words). It refuses a bad
  token with 422 and `error.code` `SUBSCRIPTION_TOKEN_INVALID`.
- Tavily: `POST {base}/search` with a JSON body (`query`, `max_results`) and the key as
  `Authorization: Bearer …`, results `results[]` with `title`, `url`, `content`. It refuses
  a bad key with 401 and a spent plan with 432 or 433, the reason in `detail.error`.

A provider only builds requests and reads answers: sending them (through the egress guard,
bounded, retried) is `podcrew_research.tools.web_search`'s job, so every provider is held to
the same limits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from podcrew_core.contracts.errors import ToolError
from podcrew_research.tools.html_text import html_to_text

BRAVE_URL = "https://api.search.brave.com"
TAVILY_URL = "https://api.tavily.com"
# A snippet is a search engine's summary of a page: a few sentences. Longer text is cut.
MAX_SNIPPET_CHARS = 600
MAX_TITLE_CHARS = 300


@dataclass(frozen=True, slots=True)
class WebResult:
    """One search result: a page's title, address and the provider's snippet of it."""

    title: str
    url: str
    snippet: str


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """The HTTP request that asks a provider for results."""

    method: str
    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None


class Provider(Protocol):
    """A web search API: `request` asks it for its best `count` results, `results` reads its
    answer (the decoded JSON)."""

    @property
    def name(self) -> str:
        """The provider's name, as configured and in metric labels."""
        ...

    @property
    def base_url(self) -> str:
        """Where it is reached; its host is the only one the search client may reach."""
        ...

    @property
    def refused_hint(self) -> str:
        """What an operator should check when it refuses a request (401, 403)."""
        ...

    def request(self, query: str) -> ProviderRequest:
        """The request for `query`."""
        ...

    def results(self, answer: Any) -> list[WebResult]:
        """The results in an answer; a `ToolError` if it is of another shape."""
        ...


class _Hit(BaseModel):
    """A result as the providers spell it; the snippet's key differs (`content`,
    `description`), the rest is alike. Unknown fields are ignored."""

    # SearXNG's engines leave some of these null; a result lacking one is still a result.
    title: str | None = None
    url: str | None = None
    content: str | None = None
    description: str | None = None


class _Hits(BaseModel):
    results: list[_Hit] = []


class _BraveAnswer(BaseModel):
    web: _Hits = _Hits()


def _clean(text: str, limit: int) -> str:
    """Text of a snippet or title without markup, on one line, at most `limit` characters."""
    plain = html_to_text(text)[1] if "<" in text else text
    plain = " ".join(plain.split())
    return plain if len(plain) <= limit else plain[: limit - 1].rsplit(" ", 1)[0] + "…"


def _web_results(hits: list[_Hit], count: int) -> list[WebResult]:
    """The first `count` results that name an http(s) page: a result's URL becomes a source
    id and what `fetch_url` is given, so anything else is left out."""
    out: list[WebResult] = []
    seen: set[str] = set()
    for hit in hits:
        url = (hit.url or "").strip()
        if not url.lower().startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        title = _clean(hit.title or "", MAX_TITLE_CHARS) or url
        snippet = _clean(hit.content or hit.description or "", MAX_SNIPPET_CHARS)
        out.append(WebResult(title, url, snippet))
        if len(out) >= count:
            break
    return out


def _parse(model: type[BaseModel], answer: Any, provider: str) -> Any:
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        raise ToolError(f"{provider} answered in an unexpected shape") from exc


def _endpoint(base: str, path: str) -> httpx.URL:
    return httpx.URL(base.rstrip("/") + path)


@dataclass(frozen=True, slots=True)
class SearxngProvider:
    """A SearXNG instance's JSON API."""

    base_url: str
    count: int = 5
    name: ClassVar[str] = "searxng"
    refused_hint: ClassVar[str] = "is `json` listed under search.formats in its settings.yml?"

    def request(self, query: str) -> ProviderRequest:
        # SearXNG has no result-count parameter: it answers a page, cut to `count` when read.
        url = _endpoint(self.base_url, "/search").copy_merge_params({"q": query, "format": "json"})
        return ProviderRequest("GET", url, {"Accept": "application/json"})

    def results(self, answer: Any) -> list[WebResult]:
        return _web_results(_parse(_Hits, answer, "SearXNG").results, self.count)


@dataclass(frozen=True, slots=True)
class _KeyedProvider:
    """A provider's public API, asked with a key."""

    api_key: str
    base_url: str
    count: int = 5


@dataclass(frozen=True, slots=True)
class BraveProvider(_KeyedProvider):
    """Brave Search's Web Search API."""

    name: ClassVar[str] = "brave"
    refused_hint: ClassVar[str] = (
        "check PODCREW_RESEARCH_WEB_SEARCH_API_KEY (a Brave subscription token)"
    )

    def request(self, query: str) -> ProviderRequest:
        url = _endpoint(self.base_url, "/res/v1/web/search").copy_merge_params(
            {"q": query, "count": str(self.count)}
        )
        headers = {"Accept": "application/json", "X-Subscription-Token": self.api_key}
        return ProviderRequest("GET", url, headers)

    def results(self, answer: Any) -> list[WebResult]:
        return _web_results(_parse(_BraveAnswer, answer, "Brave Search").web.results, self.count)


@dataclass(frozen=True, slots=True)
class TavilyProvider(_KeyedProvider):
    """Tavily's search API."""

    name: ClassVar[str] = "tavily"
    refused_hint: ClassVar[str] = "check PODCREW_RESEARCH_WEB_SEARCH_API_KEY (a Tavily API key)"

    def request(self, query: str) -> ProviderRequest:
        body = json.dumps({"query": query, "max_results": self.count}).encode()
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.api_key}",
        }
        return ProviderRequest("POST", _endpoint(self.base_url, "/search"), headers, body)

    def results(self, answer: Any) -> list[WebResult]:
        return _web_results(_parse(_Hits, answer, "Tavily").results, self.count)


def create_provider(
    name: str, *, url: str | None, api_key: str | None, count: int
) -> Provider | None:
    """The provider the settings name (None for `off`); settings validation has made sure
    what it needs is there."""
    if name == "searxng" and url:
        return SearxngProvider(url, count)
    if name == "brave" and api_key:
        return BraveProvider(api_key, url or BRAVE_URL, count)
    if name == "tavily" and api_key:
        return TavilyProvider(api_key, url or TAVILY_URL, count)
    return None
