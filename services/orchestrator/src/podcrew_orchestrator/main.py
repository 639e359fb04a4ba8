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

from podcrew_core.llm import LLMProvider, create_provider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.app import ReadinessCheck, create_service_app
from podcrew_core.runtime.auth import KeyRing, service_auth_header
from podcrew_core.runtime.deps import provide
from podcrew_core.runtime.egress import EgressGuard, create_client
from podcrew_core.runtime.http import create_http_client
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.metrics import DAILY_SPEND, DAILY_SPEND_CAP
from podcrew_core.runtime.redis import RedisClient, create_redis, is_cluster, redis_ready
from podcrew_orchestrator import a2a, routes
from podcrew_orchestrator.clients.agents import ResearchClient, WriterClient
from podcrew_orchestrator.console import mount_console
from podcrew_orchestrator.deps import ApiResources
from podcrew_orchestrator.feedback import RunFeedback
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.keys import keys_for
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.outbox import delivering
from podcrew_orchestrator.pipeline import Pipeline
from podcrew_orchestrator.semantic import SemanticCache
from podcrew_orchestrator.settings import OrchestratorConfig, OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions, budget_caps
from podcrew_orchestrator.webhooks import WebhookSender
from podcrew_orchestrator.worker import create_worker

VERSION = "0.1.0"
SPEND_GAUGE_INTERVAL_S = 5.0

log = structlog.get_logger(__name__)


def _api_resources(config: OrchestratorConfig, redis: RedisClient) -> ApiResources:
    """What the api's routes use, on one Redis client."""
    settings = config.service
    keys = keys_for(settings.key_prefix, settings.queue_partitions, cluster=is_cluster(redis))
    store = RunStore(redis, keys, settings.run_ttl_s, budget_caps=budget_caps(settings))
    limiter = TenantLimiter(
        redis, keys, max_run_age_s=settings.run_deadline_s * settings.max_deliveries
    )
    # Callbacks are checked at submit by the same guard as their deliveries.
    callbacks = EgressGuard(config.webhooks.policy()) if config.webhooks.secret else None
    semantic = SemanticCache(redis, keys, store, settings) if settings.semantic_cache else None
    return ApiResources(
        config=config,
        keyring=KeyRing(settings.api_keys),
        store=store,
        hub=EventHub(redis, keys),  # one reader for every waiter and event stream
        submissions=Submissions(
            redis,
            keys,
            store,
            limiter,
            settings,
            callbacks=callbacks,
            semantic=semantic,
        ),
        admission=Admission.from_settings("api", settings),
        streams=Admission("api-streams", settings.max_event_streams, max_queue=0, max_wait_s=0),
        feedback=RunFeedback(redis, keys),
    )


def create_app(config: OrchestratorConfig) -> FastAPI:
    """api mode: the public run API."""
    settings = config.service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning(
                "auth_disabled",
                detail="no API keys configured: every caller is "
                "tenant 'default'; configure PODCREW_ORCHESTRATOR_API_KEYS",
            )
        redis = create_redis(config.redis)
        resources = _api_resources(config, redis)
        provide(app, resources)
        app.state.readiness.checks["redis"] = redis_ready(redis)
        DAILY_SPEND_CAP.set(settings.daily_spend_cap_usd)
        spend = asyncio.create_task(_export_daily_spend(Ledger(redis, settings.key_prefix)))
        try:
            yield
        finally:
            spend.cancel()
            await resources.hub.aclose()
            await redis.aclose()

    app = create_service_app(
        title="podcrew orchestrator API",
        version=VERSION,
        description="Submit research questions, follow their progress, fetch cited reports.",
        service="orchestrator-api",
        settings=settings,
        lifespan=lifespan,
    )
    app.include_router(routes.router)
    app.include_router(a2a.router)  # the A2A endpoint and its Agent Card
    mount_console(app)
    return app


async def _export_daily_spend(ledger: Ledger) -> None:
    """Keep `podcrew_daily_spend_usd` at the budget ledger's spend of all tenants today,
    for the alerts on the daily cap."""
    while True:
        try:
            DAILY_SPEND.set((await ledger.spent_by_everyone_today()).cost_usd)
        except Exception:  # Redis away: keep the last value, try again next tick
            log.debug("daily_spend_unavailable", exc_info=True)
        await asyncio.sleep(SPEND_GAUGE_INTERVAL_S)


def _agent_check(agent: ResearchClient | WriterClient, name: str) -> ReadinessCheck:
    """Ready while at least one replica of the agent answers its health check."""

    async def check() -> None:
        if not await agent.reachable():
            raise RuntimeError(f"no {name} replica answers")

    return check


def _pipeline(
    settings: OrchestratorSettings, http: httpx.AsyncClient, provider: LLMProvider
) -> Pipeline:
    return Pipeline(
        provider=provider,
        research=ResearchClient(http, settings.research_url),
        writer=WriterClient(http, settings.writer_url),
        writer_delta_flush_s=settings.writer_delta_flush_s,
    )


def _consumer_check(consumer: asyncio.Task[None]) -> ReadinessCheck:
    """Not ready once the queue consumer has stopped (which is logged when it happens): a
    worker whose consumer loop died must not look healthy while runs pile up."""

    async def consuming() -> None:
        if consumer.done():
            raise RuntimeError(f"the queue consumer stopped: {consumer.exception()!r}")

    consumer.add_done_callback(
        lambda task: (
            task.cancelled() or log.error("queue_consumer_stopped", error=repr(task.exception()))
        )
    )
    return consuming


def create_worker_app(config: OrchestratorConfig) -> FastAPI:
    """worker mode: consume the run queue; serves only health, readiness and metrics."""
    settings = config.service
    llm_settings = config.llm

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(config.redis)
        http = create_http_client(
            settings.http_max_connections,
            headers=service_auth_header(config.auth.service_token),
        )
        provider = create_provider(llm_settings, redis, settings.key_prefix)
        pipeline = _pipeline(settings, http, provider)
        webhook_settings = config.webhooks
        webhook_client = create_client(webhook_settings.policy())
        sender = (
            WebhookSender.from_settings(webhook_settings, webhook_client)
            if webhook_settings.secret
            else None
        )
        worker = create_worker(settings, redis, pipeline, llm_settings)
        keys = keys_for(settings.key_prefix, settings.queue_partitions, cluster=is_cluster(redis))
        grace_s = settings.graceful_shutdown_s
        outbox = delivering(redis, keys, settings.consumer_name, sender, grace_s)
        checks = app.state.readiness.checks
        checks["redis"] = redis_ready(redis)
        checks["research-agent"] = _agent_check(pipeline.research, "research-agent")
        checks["writer-agent"] = _agent_check(pipeline.writer, "writer-agent")
        consumer = asyncio.create_task(worker.run(), name="worker")
        checks["consumer"] = _consumer_check(consumer)
        try:
            # The outbox stops after the worker: the runs the worker finishes while it
            # drains owe their webhooks too (any not under way by then stay pending).
            async with outbox:
                yield
                app.state.readiness.draining = True
                await worker.drain(grace_s)
        finally:
            app.state.readiness.draining = True
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
        description="Executes queued runs: plan, research in parallel, write.",
        service="orchestrator-worker",
        settings=settings,
        lifespan=lifespan,
    )
    return app
