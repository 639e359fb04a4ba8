"""The writer agent's app factory: settings in, lifespan resources, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from podcrew_core.llm import create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import create_service_app
from podcrew_core.runtime.auth import require_service_token
from podcrew_core.runtime.deps import provide
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.redis import create_redis, redis_ready
from podcrew_writer import routes
from podcrew_writer.deps import Resources
from podcrew_writer.settings import WriterConfig

VERSION = "0.1.0"


def create_app(config: WriterConfig) -> FastAPI:
    """Build the writer agent. Resources are created in the lifespan, not here."""
    settings = config.service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(config.redis)
        provider = create_provider(config.llm, redis, settings.key_prefix)
        slots = Admission.from_settings("writer-agent", settings)
        provide(app, Resources(config, provider, slots, Ledger(redis, settings.key_prefix)))
        app.state.readiness.checks["redis"] = redis_ready(redis)
        try:
            yield
        finally:
            await provider.aclose()
            await redis.aclose()

    app = create_service_app(
        title="podcrew writer agent",
        version=VERSION,
        description="Turns a question and its findings into a cited markdown report.",
        service="writer-agent",
        settings=settings,
        lifespan=lifespan,
        # An agent's API is internal: with a service token, so is its schema.
        docs_token=config.auth.service_token,
    )
    token = require_service_token(config.auth.service_token)
    app.include_router(routes.router, dependencies=[Depends(token)])
    return app
