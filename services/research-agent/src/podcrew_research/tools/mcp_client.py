"""One connection per configured MCP server, kept in the background, and the tools it lists.

The research agent is a client of the official `mcp` SDK over Streamable HTTP. What this
module guarantees:

- A server that is down never stops the agent or fails its readiness: its connection is
  retried in the background with jittered exponential back-off, and until it is back its
  tools are simply not offered (the research call says which servers were unavailable).
- The tool list is read when the connection opens and again whenever the server says it
  changed: through `subscriptions/listen` on protocol 2026-07-28, through the
  `notifications/tools/list_changed` a 2025-era server sends on its stream otherwise (the
  SDK negotiates which).
- The egress guard applies. Listing a server is the operator's permission to reach it, on a
  private address too, and nothing else: its name is checked (link-local and metadata
  addresses stay refused) and resolved once per connection, every request is pinned to that
  address, and a request to any other scheme, host or port (a redirect off the origin) is
  refused by the transport itself.
- Headers (a token) come from a mounted file read at every (re)connection, so a rotated
  Secret is picked up by the next reconnect; their values are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types
import structlog
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from prometheus_client import Counter, Gauge

from podcrew_core.contracts.errors import ToolError
from podcrew_core.runtime.egress import (
    EgressGuard,
    Resolver,
    Target,
    parse_url,
    system_resolver,
)
from podcrew_core.runtime.resilience import backoff_s
from podcrew_research import __version__
from podcrew_research.settings import McpServerConfig
from podcrew_research.tools.web_search import provider_policy

log = structlog.get_logger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 30.0
# Tools offered per server: a model choosing among hundreds chooses badly, and each is a
# metric label.
MAX_TOOLS_PER_SERVER = 32
# Pages of `tools/list` read per discovery: a paginator that never ends cannot hang it.
MAX_LIST_PAGES = 10
# A subscription stream may stay silent this long before the connection is re-opened.
STREAM_READ_TIMEOUT_S = 300.0
CLIENT_INFO = mcp_types.Implementation(name="podcrew-research-agent", version=__version__)
_HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*$")

MCP_SERVER_UP = Gauge(
    "podcrew_mcp_server_up",
    "Whether the MCP server is connected (1) and its tools offered, or not (0).",
    ["server"],
    multiprocess_mode="livemin",
)
MCP_TOOLS = Gauge(
    "podcrew_mcp_tools",
    "Tools of the MCP server offered to the model.",
    ["server"],
    multiprocess_mode="livemax",
)
MCP_CONNECTIONS = Counter(
    "podcrew_mcp_connections",
    "Connections to MCP servers by outcome (connected, failed, lost).",
    ["server", "outcome"],
)


class McpUnavailable(ToolError):
    """The MCP server a tool belongs to cannot be reached now."""

    slug = "mcp-unavailable"
    title = "MCP server unavailable"


class McpTimeout(ToolError):
    """An MCP tool call ran out of time (its own limit, or the research deadline)."""


class HeadersFileError(ValueError):
    """A headers file that cannot be read or parsed (the message never holds a value)."""


def read_headers(path: Path | None) -> dict[str, str]:
    """The HTTP headers in `path`: one `Name: value` per line, blank lines and lines starting
    with `#` skipped (the shape `curl -H` and HTTP itself use)."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.__class__.__name__
        raise HeadersFileError(f"cannot read headers file {path}: {reason}") from exc
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _HEADER.match(line)
        if match is None or any(c in match.group(2) for c in "\r\n\0"):
            raise HeadersFileError(f"{path} line {number} is not `Name: value`")
        headers[match.group(1)] = match.group(2)
    return headers


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends requests to one checked origin only, connecting to the address the guard chose
    (the name stays in `Host` and TLS SNI, so certificates are verified against it)."""

    def __init__(self, target: Target, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self.target = target
        self.origin = (target.url.scheme, target.host, target.url.port)
        self._inner = inner or httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if (url.scheme, url.host, url.port) != self.origin:
            raise httpx2.UnsupportedProtocol(f"refused: {url.host} is not the listed MCP server")
        request.url = url.copy_with(host=str(self.target.address))
        request.headers["Host"] = self.target.url.netloc.decode("ascii")
        if url.scheme == "https" and not self.target.literal:
            request.extensions = {**request.extensions, "sni_hostname": self.target.host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class ListedTool:
    """A tool the server lists and the model may be offered: its definition, and a validator
    of its input schema."""

    tool: mcp_types.Tool
    validator: Any

    @property
    def name(self) -> str:
        return self.tool.name


def usable_tools(
    listed: Sequence[mcp_types.Tool], allowed: Sequence[str], server: str
) -> list[ListedTool]:
    """The listed tools the configuration allows, whose input schema is a valid JSON schema
    of an object, at most `MAX_TOOLS_PER_SERVER`; the rest are logged and left out."""
    usable: list[ListedTool] = []
    for tool in listed:
        if allowed and tool.name not in allowed:
            continue
        schema = tool.input_schema
        try:
            cls = validator_for(schema)
            cls.check_schema(schema)
        except SchemaError:
            log.warning("mcp_tool_schema_invalid", server=server, tool=tool.name)
            continue
        if schema.get("type") != "object":
            log.warning("mcp_tool_schema_not_object", server=server, tool=tool.name)
            continue
        if len(usable) >= MAX_TOOLS_PER_SERVER:
            log.warning("mcp_tools_capped", server=server, offered=MAX_TOOLS_PER_SERVER)
            break
        usable.append(ListedTool(tool=tool, validator=cls(schema)))
    return usable


class McpConnection:
    """The background connection to one MCP server and the tools it offers now."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        resolver: Resolver = system_resolver,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        # The listing is the permission: this host (private or not), nothing else.
        policy = provider_policy(parse_url(config.url), config.timeout_s)
        self.guard = EgressGuard(policy, resolver)
        self.tools: list[ListedTool] = []
        self.version = 0
        self._client: Client | None = None
        self._wake = asyncio.Event()
        self._lost = False
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        MCP_SERVER_UP.labels(self.name).set(0)

    @property
    def available(self) -> bool:
        """Whether the server is connected and its tools may be offered."""
        return self._client is not None

    async def run(self) -> None:
        """Keep connected until cancelled, re-opening a lost or failed connection after a
        back-off that grows with each failure in a row."""
        failures = 0
        while True:
            connected = False
            try:
                connected = await self._connect_and_serve()
            except Exception as exc:  # any failure means: unavailable, try again later
                MCP_CONNECTIONS.labels(self.name, "failed").inc()
                log.warning("mcp_server_unavailable", server=self.name, error=_describe(exc))
            self._set_client(None)
            failures = 0 if connected else failures + 1
            await asyncio.sleep(
                backoff_s(
                    failures, None, base_s=RECONNECT_BASE_S, max_s=RECONNECT_MAX_S, rng=self._rng
                )
            )

    async def _connect_and_serve(self) -> bool:
        target = await self.guard.check(self.config.url)
        http = httpx2.AsyncClient(
            transport=PinnedTransport(target),
            headers=read_headers(self.config.headers_file),
            timeout=httpx2.Timeout(self.config.timeout_s, read=STREAM_READ_TIMEOUT_S),
            follow_redirects=False,
            trust_env=False,
        )
        client = Client(
            streamable_http_client(self.config.url, http_client=http),
            message_handler=self._on_message,
            client_info=CLIENT_INFO,
            cache=None,
        )
        async with http, client:
            self._lost = False
            await self._discover(client)
            MCP_CONNECTIONS.labels(self.name, "connected").inc()
            log.info("mcp_server_connected", server=self.name, tools=len(self.tools))
            self._set_client(client)
            await self._serve(client)
        MCP_CONNECTIONS.labels(self.name, "lost").inc()
        log.warning("mcp_server_lost", server=self.name)
        return True

    async def _serve(self, client: Client) -> None:
        """Re-read the tool list on every change until the connection is lost."""
        listener: asyncio.Task[None] | None = None
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            listener = asyncio.create_task(self._listen(client))
        try:
            while not self._lost:
                await self._wake.wait()
                self._wake.clear()
                if not self._lost:
                    await self._discover(client)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as changes:
                async for _ in changes:
                    self._wake.set()
        finally:
            # The stream ended, or broke: either way the connection is re-opened.
            self.lost()

    async def _on_message(self, message: Any) -> None:
        # A 2025-era server announces changes on its stream, unasked.
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._wake.set()

    async def _discover(self, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        async with asyncio.timeout(self.config.timeout_s):
            for _ in range(MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        self.tools = usable_tools(listed, self.config.allowed_tools, self.name)
        self.version += 1
        MCP_TOOLS.labels(self.name).set(len(self.tools))
        log.info("mcp_tools_listed", server=self.name, tools=[t.name for t in self.tools])

    def _set_client(self, client: Client | None) -> None:
        self._client = client
        self.version += 1
        MCP_SERVER_UP.labels(self.name).set(1 if client is not None else 0)

    def lost(self) -> None:
        """Mark the connection broken: its tools go unoffered and it is re-opened."""
        self._lost = True
        if self._client is not None:
            self._set_client(None)
        self._wake.set()

    async def call(
        self, tool: str, arguments: dict[str, Any], timeout_s: float
    ) -> mcp_types.CallToolResult:
        """Call `tool` within `timeout_s`; `McpUnavailable` when the server cannot be reached
        (the connection is then re-opened), `ToolError` when the call fails or times out."""
        client = self._client
        if client is None:
            raise McpUnavailable(f"MCP server {self.name} is unavailable")
        try:
            async with asyncio.timeout(timeout_s):
                return await client.call_tool(tool, arguments)
        except TimeoutError as exc:
            raise McpTimeout(f"{self.name}.{tool} timed out after {timeout_s:.1f}s") from exc
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self.lost()
                raise McpUnavailable(f"MCP server {self.name} is unavailable") from exc
            raise ToolError(f"{self.name}.{tool} failed: {exc.error.message[:300]}") from exc
        except (httpx2.HTTPError, OSError) as exc:
            self.lost()
            raise McpUnavailable(f"MCP server {self.name} is unavailable") from exc


def _describe(exc: BaseException) -> str:
    """A failure in one line for the log; an exception group (anyio's) by its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{exc.__class__.__name__}: {exc}"[:300]
