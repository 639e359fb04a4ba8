"""The orchestrator's app factories: `create_app` (api mode) and `create_worker_app` (worker
mode: the queue consumer plus its own /healthz, /readyz and /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI
from redis.asyncio import Redis

from podcrew_core.llm import LLMSettings, create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import ReadinessCheck, create_service_app
from podcrew_core.runtime.auth import KeyRing, ServiceTokenSettings, service_auth_header
from podcrew_core.runtime.egress import create_client
from podcrew_core.runtime.http import create_http_client
from podcrew_core.runtime.ledger import Ledger, utc_day
from podcrew_core.runtime.logging import configure_logging
from podcrew_core.runtime.metrics import DAILY_SPEND, DAILY_SPEND_CAP
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings
from podcrew_core.runtime.tracing import configure_tracing
from podcrew_orchestrator import routes
from podcrew_orchestrator.clients.agents import ResearchClient, WriterClient
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.pipeline import Pipeline
from podcrew_orchestrator.queue import RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions
from podcrew_orchestrator.webhooks import WebhookSender, WebhookSettings
from podcrew_orchestrator.worker import Worker

VERSION = "0.1.0"
SPEND_GAUGE_INTERVAL_S = 5.0

log = structlog.get_logger(__name__)


def create_app(
    settings: OrchestratorSettings | None = None, redis_settings: RedisSettings | None = None
) -> FastAPI:
    """api mode: the public run API."""
    settings = settings or OrchestratorSettings()
    redis_settings = redis_settings or RedisSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("orchestrator-api", settings.log_level)
        configure_tracing("orchestrator-api")
        if not settings.api_keys:
            log.warning(
                "auth_disabled",
                detail="no API keys configured: every caller is "
                "tenant 'default'; configure PODCREW_ORCHESTRATOR_API_KEYS",
            )
        redis = create_redis(redis_settings)
        keys = Keys(settings.key_prefix)
        store = RunStore(redis, keys, settings.run_ttl_s)
        limiter = TenantLimiter(
            redis, keys, max_run_age_s=settings.run_deadline_s * settings.max_deliveries
        )
        app.state.store = store
        hub = EventHub(redis, keys)  # one reader for every waiter and event stream
        app.state.hub = hub
        app.state.submissions = Submissions(
            redis, keys, store, limiter, settings, webhooks=bool(WebhookSettings().secret)
        )
        app.state.admission = Admission(
            "api", settings.max_concurrency, settings.max_queue, settings.max_queue_wait_s
        )
        app.state.streams = Admission(
            "api-streams", settings.max_event_streams, max_queue=0, max_wait_s=0
        )

        async def redis_ready() -> None:
            await redis.ping()

        app.state.readiness.checks["redis"] = redis_ready
        DAILY_SPEND_CAP.set(settings.daily_spend_cap_usd)
        spend = asyncio.create_task(_export_daily_spend(redis, settings.key_prefix))
        try:
            yield
        finally:
            spend.cancel()
            await hub.aclose()
            await redis.aclose()

    app = create_service_app(
        title="podcrew orchestrator API",
        version=VERSION,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        description="Submit research questions, follow their progress, fetch cited reports.",
    )
    app.state.settings = settings
    app.state.llm_settings = LLMSettings()
    app.state.keyring = KeyRing(settings.api_keys)
    app.include_router(routes.router)
    return app


async def _export_daily_spend(redis: Redis, prefix: str) -> None:
    """Keep `podcrew_daily_spend_usd` at the budget ledger's spend of all tenants today
    (`Ledger`'s `{prefix}:spend:{day}:all`), for the alerts on the daily cap."""
    while True:
        try:
            micro = await redis.hget(f"{prefix}:spend:{utc_day()}:all", "micro_usd")
            DAILY_SPEND.set(int(micro or 0) / 1_000_000)
        except Exception:  # Redis away: keep the last value, try again next tick
            log.debug("daily_spend_unavailable", exc_info=True)
        await asyncio.sleep(SPEND_GAUGE_INTERVAL_S)


def _agent_check(http: httpx.AsyncClient, base_url: str) -> ReadinessCheck:
    async def check() -> None:
        response = await http.get(base_url.rstrip("/") + "/healthz", timeout=1.0)
        response.raise_for_status()

    return check


def create_worker_app(
    settings: OrchestratorSettings | None = None, redis_settings: RedisSettings | None = None
) -> FastAPI:
    """worker mode: consume the run queue; serves only health, readiness and metrics."""
    settings = settings or OrchestratorSettings()
    redis_settings = redis_settings or RedisSettings()
    llm_settings = LLMSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("orchestrator-worker", settings.log_level)
        configure_tracing("orchestrator-worker")
        redis = create_redis(redis_settings)
        http = create_http_client(
            settings.http_max_connections,
            headers=service_auth_header(ServiceTokenSettings().service_token),
        )
        provider = create_provider(llm_settings)
        keys = Keys(settings.key_prefix)
        pipeline = Pipeline(
            provider=provider,
            research=ResearchClient(http, settings.research_url),
            writer=WriterClient(http, settings.writer_url),
            writer_delta_flush_s=settings.writer_delta_flush_s,
        )
        webhook_settings = WebhookSettings()
        webhook_client = create_client(webhook_settings.policy())
        sender = (
            WebhookSender.from_settings(webhook_settings, webhook_client)
            if webhook_settings.secret
            else None
        )
        worker = Worker(
            settings,
            RunStore(redis, keys, settings.run_ttl_s),
            RunQueue(redis, keys, settings.consumer_name),
            pipeline,
            llm_settings,
            Ledger(redis, settings.key_prefix),
            sender,
        )

        async def redis_ready() -> None:
            await redis.ping()

        checks = app.state.readiness.checks
        checks["redis"] = redis_ready
        checks["research-agent"] = _agent_check(http, settings.research_url)
        checks["writer-agent"] = _agent_check(http, settings.writer_url)
        consumer = asyncio.create_task(worker.run(), name="worker")

        async def consuming() -> None:
            # A worker whose consumer loop died must not look healthy while runs pile up.
            if consumer.done():
                raise RuntimeError(f"the queue consumer stopped: {consumer.exception()!r}")

        checks["consumer"] = consuming
        consumer.add_done_callback(
            lambda task: (
                task.cancelled()
                or log.error("queue_consumer_stopped", error=repr(task.exception()))
            )
        )
        try:
            yield
        finally:
            app.state.readiness.draining = True
            await worker.drain(settings.graceful_shutdown_s)
            consumer.cancel()
            await webhook_client.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await provider.aclose()
            await http.aclose()
            await redis.aclose()

    app = create_service_app(
        title="podcrew orchestrator worker",
        version=VERSION,
        lifespan=lifespan,
        description="Executes queued runs: plan, research in parallel, write.",
    )
    app.state.settings = settings
    return app
