"""The research agent's app factory: settings, lifespan resources, routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI

from podcrew_core.llm import LLMSettings, Stage, create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import Readiness, create_service_app
from podcrew_core.runtime.auth import ServiceTokenSettings, require_service_token
from podcrew_core.runtime.egress import EgressPolicy
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.logging import configure_logging
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings
from podcrew_core.runtime.tracing import configure_tracing
from podcrew_research import __version__
from podcrew_research.loop import LoopLimits, Researcher
from podcrew_research.routes import router
from podcrew_research.settings import ResearchSettings
from podcrew_research.tools.cache import cached
from podcrew_research.tools.fetch_url import (
    Fetcher,
    FetchLimits,
    create_fetch_client,
    fetch_url_tool,
)
from podcrew_research.tools.kb_search import KnowledgeBase, kb_search_tool


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


def create_app(settings: ResearchSettings | None = None) -> FastAPI:
    """Build the research agent. Resources are created in the lifespan, not here."""
    settings = settings or ResearchSettings()
    llm_settings = LLMSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("research-agent", settings.log_level)
        configure_tracing("research-agent")
        # Indexing reads and tokenizes the whole corpus: keep it off the event loop.
        kb = await asyncio.to_thread(KnowledgeBase.load, settings.corpus_dir)
        async with AsyncExitStack() as stack:
            redis = create_redis(RedisSettings())
            stack.push_async_callback(redis.aclose)
            app.state.ledger = Ledger(redis, settings.key_prefix)
            provider = create_provider(llm_settings)
            stack.push_async_callback(provider.aclose)
            policy = egress_policy(settings)
            client = await stack.enter_async_context(create_fetch_client(policy))
            fetcher = Fetcher(client, policy, limits=fetch_limits(settings))
            app.state.researcher = Researcher(
                provider,
                [
                    cached(kb_search_tool(kb), redis, settings.tool_cache_ttl_s),
                    cached(fetch_url_tool(fetcher), redis, settings.tool_cache_ttl_s),
                ],
                model=llm_settings.model_for(Stage.RESEARCH),
                limits=LoopLimits(
                    max_steps=settings.max_steps,
                    max_total_tokens=settings.max_tokens_per_call,
                    max_output_tokens=settings.llm_max_output_tokens,
                ),
            )
            app.state.slots = Admission(
                "research-agent",
                settings.max_concurrency,
                settings.max_queue,
                settings.max_queue_wait_s,
            )

            async def kb_loaded() -> None:
                if len(kb) == 0:
                    raise RuntimeError("the knowledge base is empty")

            async def redis_ready() -> None:
                await redis.ping()

            readiness: Readiness = app.state.readiness
            readiness.checks["kb"] = kb_loaded
            readiness.checks["redis"] = redis_ready
            yield
            readiness.draining = True

    app = create_service_app(
        title="podcrew research agent",
        version=__version__,
        description="Answers one sub-question with a bounded tool-use loop over kb_search "
        "and fetch_url, returning findings with their sources.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.llm_settings = llm_settings
    service_token = ServiceTokenSettings().service_token
    app.include_router(router, dependencies=[Depends(require_service_token(service_token))])
    return app
