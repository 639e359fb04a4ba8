"""The orchestrator's settings, shared by the api and worker modes: its own
(`PODCREW_ORCHESTRATOR_*`) and the shared parts it reads, together in `OrchestratorConfig`,
which the entry point builds and hands to the app factories."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from podcrew_core.contracts.hop import MIN_BATCH_DEADLINE_S, Priority
from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.auth import ApiKey, ServiceTokenSettings
from podcrew_core.runtime.settings import Port, RedisSettings, SecretSetting, ServiceSettings
from podcrew_orchestrator.limits import TenantLimits
from podcrew_orchestrator.webhooks import WebhookSettings


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class OrchestratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_ORCHESTRATOR_", extra="ignore")

    port: Port = 8000
    """API port (api mode)."""
    max_concurrency: int = Field(default=512, ge=1)
    """Run submissions (and their waits) served at once."""
    worker_port: Port = 8001
    """Health and metrics port (worker mode)."""
    research_url: str = "http://127.0.0.1:8101"
    """Base URL of the research agents: one (a Kubernetes Service), or several replicas
    comma-separated, which calls take in turn; a call that cannot reach one is retried on
    another."""
    writer_url: str = "http://127.0.0.1:8102"
    """Base URL of the writer: one, or several replicas comma-separated (as `research_url`)."""
    key_prefix: str = "podcrew"
    """Prefix of every Redis key."""
    queue_partitions: int = Field(default=1, ge=1, le=256)
    """Streams the run queue is split into, in a Redis Cluster (`PODCREW_REDIS_MODE=cluster`)
    only: each run, with all its keys, lives in one partition's hash slot, so the runs spread
    over the cluster's shards. Several per shard (docs/benchmarks.md, "Redis capacity"); every
    worker consumes all of them. Lowering it strands the runs queued in the partitions
    dropped: drain the queue first."""
    worker_concurrency: int = Field(default=32, ge=1, le=4096)
    """Runs one worker process executes at once; the rest wait in the queue, where the worker
    autoscaler sees them. A worker's runs share one event loop: keep runs per second (this / a
    run's duration) times the CPU per run (~20-40 ms) well under one core, or every await lags
    and calls time out (docs/benchmarks.md)."""
    writer_delta_flush_s: float = Field(default=0.05, ge=0, le=5)
    """The writer's text is published as one `writer.delta` event per this many seconds instead
    of one per model delta: the same text in ~10x fewer events (0: one event per delta)."""
    consumer_name: str = Field(default_factory=_default_consumer)
    """This worker's consumer name in the group (default: hostname-pid)."""
    claim_min_idle_s: float = Field(default=30.0, ge=0.5)
    """A run whose worker has not heartbeaten for this long is reclaimed."""
    max_deliveries: int = Field(default=5, ge=1)
    """Deliveries after which a run is dead-lettered and failed."""
    run_deadline_s: float = Field(default=300.0, gt=0)
    """Time a run may take from start to result."""
    batch_run_deadline_s: float = Field(
        default=24 * 3600.0, ge=MIN_BATCH_DEADLINE_S, le=24 * 3600.0
    )
    """Longest deadline a run with `priority: "batch"` may ask for (and its default): the
    Message Batches API answers within 24 hours, so such a run needs far longer than
    run_deadline_s."""
    run_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """How long run records and events are kept."""
    max_wait_s: float = Field(default=60.0, ge=0, le=600)
    """Largest `?wait=` a client may ask for."""
    trim_interval_s: float = Field(default=60.0, gt=0)
    """How often a worker trims acknowledged queue entries."""
    api_keys: Annotated[list[ApiKey], SecretSetting()] = Field(default_factory=list)
    """JSON list of {"tenant", "sha256"}: the SHA-256 hex of each API key and its tenant. Empty:
    the API is open and every run belongs to tenant `default` (local use only; a warning is
    logged)."""
    tenant_limits: dict[str, TenantLimits] = Field(default_factory=dict)
    """JSON: limits per tenant (requests_per_minute, burst, concurrent_runs, daily_tokens,
    daily_cost_usd); tenants not listed get default_tenant_limits."""
    default_tenant_limits: TenantLimits = Field(default_factory=TenantLimits)
    """JSON: limits of a tenant not listed."""
    daily_spend_cap_usd: float = Field(default=500.0, ge=0)
    """Spend of all tenants together in a UTC day."""
    max_run_tokens: int = Field(default=500_000, ge=1)
    """Largest token budget a run may ask for (and default)."""
    max_run_cost_usd: float = Field(default=5.0, gt=0)
    """Largest cost budget a run may ask for (and default)."""
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    """How long an Idempotency-Key is remembered."""
    coalesce: bool = True
    """Identical concurrent questions of one tenant share one execution."""
    result_cache_ttl_s: int = Field(default=3600, ge=0)
    """How long a result answers an identical question (0: off)."""
    semantic_cache: bool = False
    """Answer a question close in meaning to one the same tenant asked within the cache's
    lifetime with that run's result (needs the semantic-cache extra; never for threads)."""
    semantic_cache_threshold: float = Field(default=0.7, gt=0, le=1)
    """Cosine similarity of two questions from which the earlier run answers, if their words
    also agree (docs/operations.md has hit and false-hit rates by threshold)."""
    semantic_cache_ttl_s: int | None = Field(default=None, ge=1)
    """How long a question can answer others (unset: result_cache_ttl_s)."""
    semantic_cache_entries: int = Field(default=200, ge=1, le=10_000)
    """Recent questions kept per tenant, all scored at each lookup."""
    thread_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """Lifetime of a thread."""
    thread_max_turns: int = Field(default=10, ge=1, le=100)
    """Previous turns of a thread given to the planner."""
    max_event_streams: int = Field(default=2000, ge=1)
    """SSE streams one api process serves at once."""
    http_max_connections: int = Field(default=256, ge=1)
    """Pool size of the client to the agents."""

    def deadline_cap(self, priority: Priority) -> float:
        """The longest deadline a run of `priority` may ask for, and its default."""
        return self.batch_run_deadline_s if priority == "batch" else self.run_deadline_s

    def limits_for(self, tenant: str) -> TenantLimits:
        return self.tenant_limits.get(tenant, self.default_tenant_limits)


@dataclass(frozen=True, kw_only=True)
class OrchestratorConfig:
    """Everything the orchestrator reads from its environment, in either mode, read once by
    whoever starts it (`__main__`, a test) and handed to `create_app` or `create_worker_app`.
    A part not given is read from the environment when this is built."""

    service: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: ServiceTokenSettings = field(default_factory=ServiceTokenSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
