"""The research agent's settings: its own (`PODCREW_RESEARCH_*`) and the shared parts it reads,
together in `ResearchConfig`, which the entry point builds and hands to `create_app`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from podcrew_core.contracts.errors import ToolError
from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.auth import ServiceTokenSettings
from podcrew_core.runtime.egress import parse_url
from podcrew_core.runtime.settings import AgentSettings, Port, RedisSettings

# A server's name starts the names its tools are offered under (`docs__search`), which the
# Messages API limits to 64 characters of [a-zA-Z0-9_-].
MCP_SERVER_NAME = r"^[a-z0-9_-]{1,24}$"
# Each server is one connection, one task and a set of metric labels: a bounded number.
MAX_MCP_SERVERS = 16


class McpServerConfig(BaseModel):
    """One MCP server the research agent takes tools from (an entry of
    `PODCREW_RESEARCH_MCP_SERVERS`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=MCP_SERVER_NAME)
    """Short name: its tools are offered as `<name>__<tool>`, its documents cited as
    `mcp:<name>.<tool>:<uri>`."""
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    """The server's Streamable HTTP endpoint, e.g. `http://docs-mcp:8000/mcp`."""
    headers_file: Path | None = None
    """A file of `Name: value` lines (a mounted Secret) sent as HTTP headers, read at start
    and on every reconnect."""
    allowed_tools: list[str] = Field(default_factory=list, max_length=256)
    """Tools offered to the model; empty: every tool the server lists."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Time limit of one tool call (the research deadline may cut it shorter) and of
    connecting."""
    cache: bool = False
    """Answer repeated calls with the same input from the tool cache (for tools whose results
    depend on their input only)."""


# Shipped inside the package so a wheel or an image carries a working knowledge base.
DEFAULT_CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


class ResearchSettings(AgentSettings):
    """Where the knowledge base lives, how long the tool loop may run, the egress guard for
    `fetch_url`, the web search provider, and the MCP servers whose tools the model is
    offered."""

    model_config = SettingsConfigDict(env_prefix="PODCREW_RESEARCH_", extra="ignore")

    port: Port = 8101
    """TCP port to listen on."""
    corpus_dir: Path = DEFAULT_CORPUS_DIR
    """Directory of documents indexed for kb_search when kb_sources is empty (the bundled Python
    documentation by default)."""
    kb_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Knowledge sources for kb_search, comma-separated: each a directory of Markdown, text, HTML
    and PDF files or of an index built by `podcrew kb build`, written PATH or NAME=PATH (NAME
    then starts the source ids of its chunks). Empty: corpus_dir."""
    kb_refresh_interval_s: float = Field(default=10.0, ge=0)
    """How often the knowledge sources are checked for changes and re-indexed without a restart
    (0: never)."""
    max_steps: int = Field(default=4, ge=1, le=20)
    """Model turns per research call unless the request asks for fewer or more."""
    max_tokens_per_call: int = Field(default=20_000, ge=1)
    """Hard cap on tokens (input + output, all LLM calls) spent on one research call; the loop
    stops once it is exceeded."""
    llm_max_output_tokens: int = Field(default=1024, ge=16, le=64_000)
    """max_tokens of each LLM call in the loop."""
    max_concurrency: int = Field(default=64, ge=1)
    """Research calls served at once; the rest wait for a slot (the queue depth the autoscaler
    watches) until their deadline."""
    tool_cache_ttl_s: int = Field(default=900, ge=0)
    """How long a kb_search, fetch_url or web_search result is reused for the same input, from
    Redis (0: no cache)."""
    default_deadline_s: float = Field(default=60.0, gt=0)
    """Deadline of a request that carries no x-podcrew-deadline-ms header."""
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    """Time limit of one fetch_url call, redirects included."""
    fetch_max_bytes: int = Field(default=1_000_000, ge=1024)
    """Bytes of (decompressed) body read per fetch; the rest is not downloaded."""
    fetch_max_chars: int = Field(default=8000, ge=100)
    """Characters of page text handed to the model per fetch."""
    fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    """Redirects followed per fetch, each re-checked."""
    fetch_allowed_hosts: list[str] = Field(default_factory=list)
    """If set, fetch_url only reaches these hosts and their subdomains; empty means any public
    host."""
    fetch_allow_private: bool = False
    """Tests and local development only: let fetch_url reach loopback and private addresses.
    Link-local (cloud metadata), multicast and reserved stay refused."""

    mcp_servers: Annotated[list[McpServerConfig], NoDecode] = Field(
        default_factory=list, max_length=MAX_MCP_SERVERS
    )
    """MCP servers whose tools the model is offered, a JSON array of objects: `name`, `url`,
    and optionally `headers_file`, `allowed_tools`, `timeout_s` (10), `cache` (false).
    docs/research-tools.md describes them."""

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _parse_servers(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON array of server objects: {exc}") from exc
        return value

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServerConfig]) -> list[McpServerConfig]:
        names = [s.name for s in servers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"MCP server names must be unique: {', '.join(repeated)} repeated")
        return servers

    web_search_provider: Literal["off", "searxng", "brave", "tavily"] = "off"
    """Web search offered to the model as web_search: off, or the provider it asks (a
    self-hosted SearXNG, Brave Search, Tavily)."""
    web_search_url: str | None = None
    """Base URL of the web search provider: required for searxng (the instance, its JSON
    format enabled); for brave and tavily their public API unless set."""
    web_search_api_key: SecretStr | None = None
    """API key of the web search provider: required for brave (a subscription token) and
    tavily."""
    web_search_max_results: int = Field(default=5, ge=1, le=20)
    """Results one web_search returns at most."""
    web_search_timeout_s: float = Field(default=5.0, gt=0)
    """Time limit of one web_search call, retries included."""

    @model_validator(mode="after")
    def _web_search_complete(self) -> ResearchSettings:
        # Refused at start: an agent that cannot search would only find out at the first call.
        provider = self.web_search_provider
        if provider == "searxng" and not self.web_search_url:
            raise ValueError(
                "PODCREW_RESEARCH_WEB_SEARCH_PROVIDER=searxng needs "
                "PODCREW_RESEARCH_WEB_SEARCH_URL (the instance's base URL)"
            )
        if provider in ("brave", "tavily") and not (
            self.web_search_api_key and self.web_search_api_key.get_secret_value()
        ):
            raise ValueError(
                f"PODCREW_RESEARCH_WEB_SEARCH_PROVIDER={provider} needs "
                "PODCREW_RESEARCH_WEB_SEARCH_API_KEY (or _FILE)"
            )
        if provider != "off" and self.web_search_url:
            try:
                parse_url(self.web_search_url)
            except ToolError as exc:
                raise ValueError(f"PODCREW_RESEARCH_WEB_SEARCH_URL: {exc.detail}") from exc
        return self

    @field_validator("kb_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        # One environment variable lists them all: comma-separated as a shell writes paths, or
        # a JSON array as the chart renders a list.
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def knowledge_sources(self) -> list[str]:
        """The sources kb_search indexes: kb_sources, or else corpus_dir."""
        return self.kb_sources or [str(self.corpus_dir)]


@dataclass(frozen=True, kw_only=True)
class ResearchConfig:
    """Everything the research agent reads from its environment, read once by whoever starts
    it (`__main__`, a test) and handed to `create_app`. A part not given is read from the
    environment when this is built."""

    service: ResearchSettings = field(default_factory=ResearchSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: ServiceTokenSettings = field(default_factory=ServiceTokenSettings)
