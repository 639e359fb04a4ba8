"""Prometheus metrics shared by every service (one `podcrew_` prefix, base units).

Labels are bounded: routes are templates, never raw paths; run ids, trace ids and prompts
never appear. The LLM metrics are also exported under the OpenTelemetry GenAI semantic
conventions' names (`gen_ai.client.token.usage` → `gen_ai_client_token_usage`, …) so GenAI
dashboards built for those conventions work unchanged.

Several uvicorn workers per pod: when `PROMETHEUS_MULTIPROC_DIR` is set before the process
starts, prometheus-client keeps every value in a memory-mapped file per process and
`/metrics` merges them (`collect_latest`). Every gauge states how to merge: `livesum` for
"how many right now" gauges, `livemax` for values every process reads from one shared source
(queue depth from Redis) or where the worst process matters (breaker state).
"""

from __future__ import annotations

import os
from typing import Final, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics import MetricWrapperBase

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

M = TypeVar("M", bound=MetricWrapperBase)

# HTTP hops take milliseconds; LLM calls and whole runs take up to minutes.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 180, 300, 600)
# Redis answers in well under a millisecond on a healthy network; blocking reads wait seconds.
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)
# The GenAI conventions' advised boundaries for token counts (powers of 4).
TOKEN_BUCKETS = tuple(4.0**n for n in range(14))


def multiprocess_enabled() -> bool:
    """True when prometheus-client runs in multiprocess mode (several workers per pod)."""
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def collect_latest() -> bytes:
    """The exposition text: this process's registry, or every worker's merged in
    multiprocess mode (a fresh registry per scrape, as prometheus-client prescribes)."""
    if not multiprocess_enabled():
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a finished worker's `live*` gauges in multiprocess mode, so a restarted worker
    does not leave its last in-flight count behind. No-op otherwise."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            pid if pid is not None else os.getpid()
        )


HTTP_SERVER_REQUESTS = Counter(
    "podcrew_http_server_requests",
    "Inbound HTTP requests by route template, method and status code.",
    ["method", "route", "status"],
)
HTTP_SERVER_DURATION = Histogram(
    "podcrew_http_server_request_duration_seconds",
    "Inbound HTTP request duration (to the end of the response body).",
    ["method", "route"],
    buckets=LLM_BUCKETS,
)
HTTP_SERVER_IN_FLIGHT = Gauge(
    "podcrew_http_server_requests_in_flight",
    "Inbound HTTP requests being served now.",
    multiprocess_mode="livesum",
)
HTTP_CLIENT_REQUESTS = Counter(
    "podcrew_http_client_requests",
    "Outbound HTTP requests to other podcrew services by target and outcome.",
    ["target", "outcome"],
)
HTTP_CLIENT_DURATION = Histogram(
    "podcrew_http_client_request_duration_seconds",
    "Outbound HTTP request duration by target (for a stream: to its last event).",
    ["target"],
    buckets=LLM_BUCKETS,
)
# What a hop adds is budgeted at 1 ms (DESIGN.md): fine buckets around it.
HOP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.05)
HTTP_CLIENT_HOP_OVERHEAD = Histogram(
    "podcrew_http_client_hop_overhead_seconds",
    "What an internal HTTP hop adds: the caller's time for a request minus the time the"
    " callee's app reported in Server-Timing (both HTTP stacks, the network, queueing).",
    ["target"],
    buckets=HOP_BUCKETS,
)
REDIS_COMMAND_DURATION = Histogram(
    "podcrew_redis_command_duration_seconds",
    "Redis command duration by command (MULTI: a transaction, PIPELINE: a pipeline), "
    "client retries included; blocking reads (XREAD, XREADGROUP) include their wait.",
    ["command"],
    buckets=REDIS_BUCKETS,
)
REDIS_COMMAND_ERRORS = Counter(
    "podcrew_redis_command_errors",
    "Redis commands that failed, by command and error class.",
    ["command", "error"],
)
LLM_REQUESTS = Counter(
    "podcrew_llm_requests",
    "LLM calls by provider, model, stage and outcome.",
    ["provider", "model", "stage", "outcome"],
)
LLM_DURATION = Histogram(
    "podcrew_llm_request_duration_seconds",
    "LLM call duration by provider, model and stage.",
    ["provider", "model", "stage"],
    buckets=LLM_BUCKETS,
)
LLM_TIME_TO_FIRST_TOKEN = Histogram(
    "podcrew_llm_time_to_first_token_seconds",
    "Streamed LLM calls: time from the request to the first text delta.",
    ["provider", "model", "stage"],
    buckets=LLM_BUCKETS,
)
LLM_TOKENS = Counter(
    "podcrew_llm_tokens",
    "LLM tokens by model, stage and token type (input, output, cache_read, cache_creation).",
    ["model", "stage", "type"],
)
LLM_COST = Counter(
    "podcrew_llm_cost_usd",
    "LLM spend in US dollars at the configured price table, by model and stage.",
    ["model", "stage"],
)
GENAI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "OpenTelemetry GenAI gen_ai.client.token.usage: tokens per LLM call, by token type "
    "(input includes cached input tokens).",
    [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_token_type",
        "gen_ai_request_model",
        "gen_ai_response_model",
    ],
    buckets=TOKEN_BUCKETS,
)
GENAI_OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "OpenTelemetry GenAI gen_ai.client.operation.duration; error_type is set on failures.",
    [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "error_type",
    ],
    buckets=LLM_BUCKETS,
)
GENAI_TIME_TO_FIRST_CHUNK = Histogram(
    "gen_ai_client_operation_time_to_first_chunk_seconds",
    "OpenTelemetry GenAI gen_ai.client.operation.time_to_first_chunk (streamed calls).",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"],
    buckets=LLM_BUCKETS,
)
TOOL_CALLS = Counter(
    "podcrew_tool_calls",
    "Research tool calls by tool and outcome.",
    ["tool", "outcome"],
)
RUNS_FINISHED = Counter(
    "podcrew_runs_finished",
    "Runs that reached a final state, by outcome.",
    ["outcome"],
)
RUN_DURATION = Histogram(
    "podcrew_run_duration_seconds",
    "End-to-end run duration from acceptance to final state.",
    ["outcome"],
    buckets=LLM_BUCKETS,
)
RUN_COST = Counter(
    "podcrew_run_cost_usd",
    "Spend of finished runs in US dollars, by model tier (economy, standard, premium) and "
    "tenant class (a bounded grouping of tenants set in their limits, never the tenant).",
    ["tier", "tenant_class"],
)
RUN_TOKENS = Counter(
    "podcrew_run_tokens",
    "Tokens of finished runs, by model tier and tenant class.",
    ["tier", "tenant_class"],
)
RUNS_BY_PROMPT_VERSION = Counter(
    "podcrew_runs_by_prompt_version",
    "Runs a worker finished, by the prompt set versions they used (`planner:…,research:…,"
    "writer:…`, bounded: `BoundedLabel`), model tier and outcome.",
    ["prompt_version", "tier", "outcome"],
)
RUN_FEEDBACK = Counter(
    "podcrew_run_feedback",
    "Users' feedback on run reports (one per run and user), by the run's prompt set versions,"
    " model tier and rating (positive, negative).",
    ["prompt_version", "tier", "rating"],
)
FANOUT_WIDTH = Histogram(
    "podcrew_run_fanout_width",
    "Sub-questions researched in parallel per run.",
    buckets=(1, 2, 3, 4, 5, 6),
)
DAILY_SPEND = Gauge(
    "podcrew_daily_spend_usd",
    "LLM spend of all tenants so far in the current UTC day, as the budget ledger in Redis "
    "counts it.",
    multiprocess_mode="livemax",
)
DAILY_SPEND_CAP = Gauge(
    "podcrew_daily_spend_cap_usd",
    "The configured cap on all tenants' LLM spend in one UTC day.",
    multiprocess_mode="livemax",
)
# Starts at 0 (most calls wait for nothing) and has 1 s: the autoscalers' gate and the
# saturation alert read the share of calls that waited longer than that (shorter waits, such
# as a pause for a 429's retry-after, are no reason to hold back the autoscaler).
LIMITER_WAIT_BUCKETS = (0.0, 0.01, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
LLM_RATELIMIT_WAIT = Histogram(
    "podcrew_llm_ratelimit_wait_seconds",
    "Time each LLM call waited for capacity from the shared rate limiter, by model and run "
    "priority (interactive, batch); 0 for calls that did not wait.",
    ["model", "priority"],
    buckets=LIMITER_WAIT_BUCKETS,
)
LLM_RATELIMIT_IN_USE = Gauge(
    "podcrew_llm_ratelimit_capacity_in_use_ratio",
    "Share of the shared rate limiter's bucket in use after this process's last acquire, by "
    "model and limit (requests, input_tokens, output_tokens); 1 is saturated.",
    ["model", "limit"],
    multiprocess_mode="livemax",
)
LLM_RATELIMIT_THROTTLED = Counter(
    "podcrew_llm_ratelimit_throttled",
    "LLM calls the provider's rate limit held back, by model and reason: waited (for the "
    "shared limiter), deadline (failed: no capacity before the run's deadline), provider (the "
    "provider answered 429), unavailable (Redis unreachable: called without the limiter).",
    ["model", "reason"],
)
CACHE_REQUESTS = Counter(
    "podcrew_cache_requests",
    "Cache lookups by cache (result, kb_search, fetch_url) and outcome (hit, miss).",
    ["cache", "outcome"],
)


class Children(Generic[M]):
    """A metric's children by label values, kept in a dict: `metric.labels(...)` checks and
    converts its arguments and takes the metric's lock on every call, and the hot paths
    (every LLM call, Redis command and request) look up a dozen children each. Holds only
    children the metric itself holds, so adds no label values; for metrics whose children
    are never removed."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class BoundedLabel:
    """Keeps a label whose values come from data (prompt versions) a bounded set: the first
    `limit` distinct values a process sees are used as they are, any later one becomes
    `overflow`, and a missing value is `missing`.

    Prompt versions change only with a deploy, so a process sees its own build's versions,
    those of the replicas it talks to during a rollout and, where runs are read back (user
    feedback), those of the runs still stored: a handful. The limit is the guarantee."""

    def __init__(self, limit: int = 16, *, overflow: str = "other", missing: str = "unknown"):
        self.limit = limit
        self.overflow = overflow
        self.missing = missing
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return self.missing
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return self.overflow
        self._seen.add(value)
        return value


# The one bound on prompt-version label values in this process, shared by every metric.
PROMPT_VERSION_LABEL = BoundedLabel()
