"""A real MCP server for the tests, built with the official SDK (`MCPServer`, the SDK's
FastMCP) and served over Streamable HTTP: `python tests/servers/mcp_docs.py PORT`.

Its tools are the cases a research agent must handle: one that returns documents, one that
fails, one that hangs past any deadline, and one that changes the tool list (adding a
glossary tool and telling subscribed clients the list changed).
"""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import EmbeddedResource, ResourceLink, TextResourceContents

HANDBOOK = {
    "handbook://deploys/blue-green": (
        "Blue-green deploys",
        "A quorble deploy is blue-green: the new quorble fleet takes traffic only after its "
        "smoke tests pass, and the old fleet stays up for one hour.",
    ),
    "handbook://deploys/rollback": (
        "Rolling back",
        "Roll back a quorble deploy by switching traffic to the old fleet with quorblectl "
        "flip; it takes under a minute.",
    ),
}
GLOSSARY = {"quorble": "A quorble is the team's payment-routing service."}

server = MCPServer("docs", instructions="The team handbook, over MCP.")


@server.tool(description="Search the team handbook for passages about a topic, such as deploys.")
def search_handbook(query: str, limit: int = 3) -> list[ResourceLink]:
    """Every handbook page sharing a word with the query, as links with their text."""
    words = {w.strip("?.,").lower() for w in query.split() if len(w) > 3}
    hits = [
        ResourceLink(name=title, title=title, uri=uri, description=text)
        for uri, (title, text) in HANDBOOK.items()
        if words & {w.strip(".,:").lower() for w in text.split()}
    ]
    return hits[:limit]


@server.tool(description="Read one handbook page in full by its handbook:// address.")
def read_handbook_page(uri: str) -> EmbeddedResource:
    """A page's whole text, embedded."""
    title, text = HANDBOOK[uri]
    return EmbeddedResource(resource=TextResourceContents(uri=uri, text=f"# {title}\n\n{text}"))


@server.tool(description="Explode the widget registry (always fails).")
def explode_widget_registry(reason: str) -> str:
    """A tool whose every call fails."""
    raise RuntimeError(f"the widget registry is on fire ({reason})")


@server.tool(description="Count the census of sleepy llamas (very slow).")
async def sleepy_llama_census(region: str) -> str:
    """A tool that hangs far past any research deadline."""
    await asyncio.sleep(3600)
    return "never"


def lookup_glossary(term: str) -> str:
    """A glossary entry."""
    return GLOSSARY.get(term.lower(), f"No glossary entry for {term}.")


@server.tool(description="Refresh the catalog of tools this server offers.")
async def refresh_tool_catalog(ctx: Context) -> str:
    """Add `lookup_glossary` and tell clients the tool list changed, on either protocol."""
    if "lookup_glossary" not in {t.name for t in await server.list_tools()}:
        server.add_tool(lookup_glossary, description="Look up a term in the team glossary.")
    await ctx.notify_tools_changed()
    session = getattr(ctx.request_context, "session", None)
    if session is not None and hasattr(session, "send_tool_list_changed"):
        await session.send_tool_list_changed()
    return "catalog refreshed"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
