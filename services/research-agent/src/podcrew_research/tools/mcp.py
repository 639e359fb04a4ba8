"""Tools from MCP servers, as the research loop offers them to the model.

Each tool a connected server lists (`tools.mcp_client`) becomes a loop tool named
`<server>__<tool>`: the Messages API allows only `[a-zA-Z0-9_-]{1,64}` in a tool name, so the
namespace separator is a double underscore, not the dot of `server.tool`. Its input is
validated against the tool's own JSON schema (`jsonschema`) before anything is sent; the call
takes at most the server's `timeout_s` and what the hop being served has left; its result
reaches the model as JSON whose texts sit between the `<untrusted>` delimiters of fetched
pages, since a server's answer is data, not instructions. Documents in a result (resource
links and embedded resources) become sources findings may cite, with the id
`mcp:<server>.<tool>:<uri>`.

Metric labels stay bounded: servers come from configuration, and a server's tool names
(from discovery, which a server may change at will) are labelled by name for the first
`MAX_TOOL_LABELS` names seen and as `other` after.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from typing import Any

import mcp_types
from jsonschema.exceptions import best_match
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from podcrew_core.contracts.errors import ToolError
from podcrew_core.contracts.schemas import Source
from podcrew_core.llm.types import ToolSpec
from podcrew_core.runtime.redis import RedisClient
from podcrew_core.runtime.scope import time_left
from podcrew_research.settings import ResearchSettings
from podcrew_research.tools import Tool, ToolOutput
from podcrew_research.tools.cache import cached
from podcrew_research.tools.fetch_url import wrap_untrusted
from podcrew_research.tools.mcp_client import (
    ListedTool,
    McpConnection,
    McpTimeout,
    McpUnavailable,
)

SEPARATOR = "__"
SOURCE_PREFIX = "mcp:"
MAX_TOOL_NAME = 64
MAX_DESCRIPTION_CHARS = 1024
# Characters of a result handed to the model, over all its texts.
MAX_RESULT_CHARS = 8000
MAX_TOOL_LABELS = 64
OTHER_LABEL = "other"
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_-]")

MCP_TOOL_CALLS = Counter(
    "podcrew_mcp_tool_calls",
    "MCP tool calls by server, tool and outcome (ok, error, invalid, timeout, unavailable).",
    ["server", "tool", "outcome"],
)
MCP_TOOL_DURATION = Histogram(
    "podcrew_mcp_tool_call_duration_seconds",
    "Time of an MCP tool call, answered or not.",
    ["server", "tool"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def offered_name(server: str, tool: str) -> str:
    """The name `tool` of `server` is offered under: `<server>__<tool>`, characters the
    Messages API refuses replaced by `_`, cut to 64 characters."""
    return f"{server}{SEPARATOR}{_NOT_IN_NAME.sub('_', tool)}"[:MAX_TOOL_NAME]


def source_id(server: str, tool: str, uri: str) -> str:
    """The citable id of a document `tool` of `server` returned."""
    return f"{SOURCE_PREFIX}{server}.{tool}:{uri}"


class _Labels:
    """A server's tool names as metric labels: the first `MAX_TOOL_LABELS`, then `other`."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def __call__(self, tool: str) -> str:
        if tool in self._known:
            return tool
        if len(self._known) < MAX_TOOL_LABELS:
            self._known.add(tool)
            return tool
        return OTHER_LABEL


def _document(server: str, tool: str, block: Any) -> tuple[Source, str] | None:
    """A resource link or embedded text resource as a source and its text; else None."""
    if isinstance(block, mcp_types.ResourceLink):
        title = block.title or block.name or block.uri
        text = block.description or ""
        uri = str(block.uri)
    elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
        block.resource, mcp_types.TextResourceContents
    ):
        uri = str(block.resource.uri)
        text = block.resource.text
        heading = text.lstrip().split("\n", 1)[0]
        title = heading.lstrip("# ").strip() if heading.startswith("#") else uri
    else:
        return None
    url = uri if uri.startswith(("http://", "https://")) else None
    return Source(id=source_id(server, tool, uri), title=title[:300] or uri, url=url), text


def result_output(server: str, tool: str, result: mcp_types.CallToolResult) -> ToolOutput:
    """What the model reads of a tool's result (JSON; every text untrusted, all of them cut
    to `MAX_RESULT_CHARS`), and the documents in it as sources."""
    room = MAX_RESULT_CHARS
    content: list[dict[str, Any]] = []
    sources: list[Source] = []
    for block in result.content:
        document = _document(server, tool, block)
        if document is not None:
            source, text = document
            sources.append(source)
            item: dict[str, Any] = {"source": source.model_dump()}
        elif isinstance(block, mcp_types.TextContent):
            text, item = block.text, {}
        else:
            content.append({"omitted": f"{block.type} content is not shown"})
            continue
        item["text"] = wrap_untrusted(text[:room]) + ("\n[truncated]" if len(text) > room else "")
        room = max(0, room - len(text))
        content.append(item)
    payload = {"server": server, "tool": tool, "content": content}
    return ToolOutput(content=json.dumps(payload, ensure_ascii=False), sources=sources)


def _error_text(result: mcp_types.CallToolResult) -> str:
    texts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
    return wrap_untrusted(" ".join(texts)[:500] or "no detail")


class McpToolbox:
    """The tools of every configured MCP server, as loop tools, kept in step with what each
    connection lists; the connections run as background tasks while the agent serves."""

    def __init__(
        self,
        connections: Sequence[McpConnection],
        *,
        redis: RedisClient,
        cache_ttl_s: int,
        key_prefix: str,
    ) -> None:
        self.connections = list(connections)
        self._redis = redis
        self._cache_ttl_s = cache_ttl_s
        self._key_prefix = key_prefix
        self._labels = {c.name: _Labels() for c in self.connections}
        self._versions: tuple[int, ...] = ()
        self._tools: list[Tool] = []

    @classmethod
    def from_settings(cls, settings: ResearchSettings, redis: RedisClient) -> McpToolbox:
        """One connection per configured server (none is opened yet: `run` opens them), with
        the agent's tool cache for the servers that opt in."""
        return cls(
            [McpConnection(s) for s in settings.mcp_servers],
            redis=redis,
            cache_ttl_s=settings.tool_cache_ttl_s,
            key_prefix=settings.key_prefix,
        )

    async def run(self) -> None:
        """Keep every server connected until cancelled."""
        async with asyncio.TaskGroup() as group:
            for connection in self.connections:
                group.create_task(connection.run())

    def tools(self) -> list[Tool]:
        """The tools of the servers connected now (rebuilt only when a list changed)."""
        versions = tuple(c.version for c in self.connections)
        if versions != self._versions:
            self._tools = [
                self._tool(c, listed) for c in self.connections if c.available for listed in c.tools
            ]
            self._versions = versions
        return self._tools

    def unavailable(self) -> list[str]:
        """The servers whose tools cannot be offered now, as `mcp:<server>`."""
        return [f"{SOURCE_PREFIX}{c.name}" for c in self.connections if not c.available]

    def _tool(self, connection: McpConnection, listed: ListedTool) -> Tool:
        server, name = connection.name, offered_name(connection.name, listed.name)
        label = self._labels[server](listed.name)
        described = listed.tool.description or listed.tool.title or listed.name
        spec = ToolSpec(
            name=name,
            description=f"[from MCP server {server}] {described}"[:MAX_DESCRIPTION_CHARS],
            input_schema=listed.tool.input_schema,
        )

        async def run(arguments: dict[str, Any]) -> ToolOutput:
            return await _call(connection, listed, label, arguments)

        tool = Tool(spec=spec, run=run, label=f"{server}{SEPARATOR}{label}")
        if not connection.config.cache:
            return tool
        return cached(tool, self._redis, self._cache_ttl_s, self._key_prefix)


async def _call(
    connection: McpConnection, listed: ListedTool, label: str, arguments: dict[str, Any]
) -> ToolOutput:
    """One validated, bounded, metered call of `listed` on `connection`."""
    server, tool = connection.name, listed.name
    span = trace.get_current_span()
    span.set_attribute("podcrew.mcp.server", server)
    span.set_attribute("podcrew.mcp.tool", tool)
    outcome = "ok"
    started = time.perf_counter()
    try:
        error = best_match(listed.validator.iter_errors(arguments))
        if error is not None:
            outcome = "invalid"
            where = "/".join(str(p) for p in error.absolute_path) or "input"
            raise ToolError(
                f"invalid {offered_name(server, tool)} input at {where}: {error.message[:200]}"
            )
        budget = time_left(connection.config.timeout_s)
        if budget <= 0:
            outcome = "timeout"
            raise ToolError("no time left to call the tool")
        result = await connection.call(tool, arguments, budget)
        if result.is_error:
            outcome = "error"
            raise ToolError(f"{server}.{tool} answered with an error: {_error_text(result)}")
        return result_output(server, tool, result)
    except McpUnavailable:
        outcome = "unavailable"
        raise
    except McpTimeout:
        outcome = "timeout"
        raise
    except ToolError:
        if outcome == "ok":
            outcome = "error"
        raise
    finally:
        MCP_TOOL_CALLS.labels(server, label, outcome).inc()
        MCP_TOOL_DURATION.labels(server, label).observe(time.perf_counter() - started)
