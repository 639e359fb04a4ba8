"""The research agent's app factory: settings, lifespan resources, routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import Depends, FastAPI

from podcrew_core.llm import LLMProvider, Stage, create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import Readiness, create_service_app
from podcrew_core.runtime.auth import require_service_token
from podcrew_core.runtime.deps import provide
from podcrew_core.runtime.egress import EgressPolicy, create_client
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.redis import RedisClient, create_redis, redis_ready
from podcrew_research import __version__
from podcrew_research.deps import Resources
from podcrew_research.loop import LoopLimits, Researcher
from podcrew_research.routes import router
from podcrew_research.settings import ResearchConfig, ResearchSettings
from podcrew_research.tools import Tool
from podcrew_research.tools.cache import cached
from podcrew_research.tools.fetch_url import (
    Fetcher,
    FetchLimits,
    create_fetch_client,
    fetch_url_tool,
)
from podcrew_research.tools.kb_search import (
    KnowledgeBase,
    kb_search_tool,
    keep_current,
    versioned,
)
from podcrew_research.tools.mcp import McpToolbox
from podcrew_research.tools.web_search import WebSearcher, provider_policy, web_search_tool
from podcrew_research.tools.web_search_providers import create_provider as create_search_provider


def egress_policy(settings: ResearchSettings) -> EgressPolicy:
    """The fetch guard's policy as the settings describe it."""
    return EgressPolicy(
        allow_private=settings.fetch_allow_private,
        allowed_hosts=tuple(settings.fetch_allowed_hosts),
        timeout_s=settings.fetch_timeout_s,
    )


def fetch_limits(settings: ResearchSettings) -> FetchLimits:
    """How far fetch_url follows a page and how much it reads, as the settings say."""
    return FetchLimits(
        max_redirects=settings.fetch_max_redirects,
        max_bytes=settings.fetch_max_bytes,
        max_chars=settings.fetch_max_chars,
    )


def _researcher(
    config: ResearchConfig,
    kb: KnowledgeBase,
    provider: LLMProvider,
    redis: RedisClient,
    fetcher: Fetcher,
    mcp: McpToolbox,
    searcher: WebSearcher | None = None,
) -> Researcher:
    """The tool loop over the knowledge base, the web and the MCP servers' tools, each behind
    the Redis cache (an MCP server's only when it opts in)."""
    settings = config.service

    def cache(tool: Tool) -> Tool:
        return cached(tool, redis, settings.tool_cache_ttl_s, settings.key_prefix)

    tools = [versioned(cache(kb_search_tool(kb)), kb), cache(fetch_url_tool(fetcher))]
    if searcher is not None:
        tools.append(cache(web_search_tool(searcher)))
    return Researcher(
        provider,
        tools,
        model=config.llm.model_for(Stage.RESEARCH),
        limits=LoopLimits(
            max_steps=settings.max_steps,
            max_total_tokens=settings.max_tokens_per_call,
            max_output_tokens=settings.llm_max_output_tokens,
        ),
        toolboxes=[mcp],
    )


async def _web_searcher(settings: ResearchSettings, stack: AsyncExitStack) -> WebSearcher | None:
    """The web search the settings configure, its client closed with `stack`; None when off."""
    key = settings.web_search_api_key
    provider = create_search_provider(
        settings.web_search_provider,
        url=settings.web_search_url,
        api_key=key.get_secret_value() if key is not None else None,
        count=settings.web_search_max_results,
    )
    if provider is None:
        return None
    policy = provider_policy(httpx.URL(provider.base_url), settings.web_search_timeout_s)
    client = await stack.enter_async_context(create_client(policy))
    return WebSearcher(provider, client, policy)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: ResearchConfig) -> FastAPI:
    """Build the research agent. Resources are created in the lifespan, not here."""
    settings = config.service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Indexing reads, tokenizes and embeds the whole corpus: keep it off the event loop.
        kb = await asyncio.to_thread(KnowledgeBase.load, *settings.knowledge_sources())
        async with AsyncExitStack() as stack:
            if settings.kb_refresh_interval_s > 0:
                watcher = asyncio.create_task(keep_current(kb, settings.kb_refresh_interval_s))
                stack.push_async_callback(_stop, watcher)
            redis = create_redis(config.redis)
            stack.push_async_callback(redis.aclose)
            provider = create_provider(config.llm, redis, settings.key_prefix)
            stack.push_async_callback(provider.aclose)
            policy = egress_policy(settings)
            client = await stack.enter_async_context(create_fetch_client(policy))
            fetcher = Fetcher(client, policy, limits=fetch_limits(settings))
            # Connected in the background: a server that is down never holds up readiness.
            mcp = McpToolbox.from_settings(settings, redis)
            stack.push_async_callback(_stop, asyncio.create_task(mcp.run()))
            searcher = await _web_searcher(settings, stack)
            provide(
                app,
                Resources(
                    config=config,
                    researcher=_researcher(config, kb, provider, redis, fetcher, mcp, searcher),
                    slots=Admission.from_settings("research-agent", settings),
                    ledger=Ledger(redis, settings.key_prefix),
                ),
            )

            async def kb_loaded() -> None:
                if len(kb) == 0:
                    raise RuntimeError("the knowledge base is empty")

            readiness: Readiness = app.state.readiness
            readiness.checks["kb"] = kb_loaded
            readiness.checks["redis"] = redis_ready(redis)
            yield
            readiness.draining = True

    app = create_service_app(
        title="podcrew research agent",
        version=__version__,
        description="Answers one sub-question with a bounded tool-use loop over kb_search, "
        "fetch_url, (when configured) web_search and the tools of configured MCP servers, "
        "returning findings with their sources.",
        service="research-agent",
        settings=settings,
        lifespan=lifespan,
        # An agent's API is internal: with a service token, so is its schema.
        docs_token=config.auth.service_token,
    )
    token = require_service_token(config.auth.service_token)
    app.include_router(router, dependencies=[Depends(token)])
    return app
