"""Prometheus metrics shared by every service (one `podcrew_` prefix, base units).

Labels are bounded: routes are templates, never raw paths; run ids never appear.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# HTTP hops take milliseconds; LLM calls and whole runs take up to minutes.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 180, 300, 600)

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
)
HTTP_CLIENT_REQUESTS = Counter(
    "podcrew_http_client_requests",
    "Outbound HTTP requests to other podcrew services by target and outcome.",
    ["target", "outcome"],
)
HTTP_CLIENT_DURATION = Histogram(
    "podcrew_http_client_request_duration_seconds",
    "Outbound HTTP request duration by target.",
    ["target"],
    buckets=LLM_BUCKETS,
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
FANOUT_WIDTH = Histogram(
    "podcrew_run_fanout_width",
    "Sub-questions researched in parallel per run.",
    buckets=(1, 2, 3, 4, 5, 6),
)
