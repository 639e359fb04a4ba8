"""The writer agent's app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from podcrew_core.llm import LLMSettings, create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import create_service_app
from podcrew_core.runtime.auth import ServiceTokenSettings, require_service_token
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.logging import configure_logging
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings
from podcrew_core.runtime.tracing import configure_tracing
from podcrew_writer import routes
from podcrew_writer.settings import WriterSettings

VERSION = "0.1.0"


def create_app(settings: WriterSettings | None = None) -> FastAPI:
    settings = settings or WriterSettings()
    llm_settings = LLMSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("writer-agent", settings.log_level)
        configure_tracing("writer-agent")
        redis = create_redis(RedisSettings())
        app.state.ledger = Ledger(redis, settings.key_prefix)
        provider = create_provider(llm_settings)
        app.state.provider = provider

        async def redis_ready() -> None:
            await redis.ping()

        app.state.readiness.checks["redis"] = redis_ready
        app.state.slots = Admission(
            "writer-agent", settings.max_concurrency, settings.max_queue, settings.max_queue_wait_s
        )
        try:
            yield
        finally:
            await provider.aclose()
            await redis.aclose()

    app = create_service_app(
        title="podcrew writer agent",
        version=VERSION,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        description="Turns a question and its findings into a cited markdown report.",
    )
    app.state.settings = settings
    app.state.llm_settings = llm_settings
    service_token = ServiceTokenSettings().service_token
    app.include_router(routes.router, dependencies=[Depends(require_service_token(service_token))])
    return app
