"""The research agent's own metrics: how many requests wait for a slot and how many run.

The queue depth is what the autoscaler scales this service on (DESIGN: "requests waiting
for a concurrency slot").
"""

from __future__ import annotations

from prometheus_client import Gauge

RESEARCH_QUEUE_DEPTH = Gauge(
    "podcrew_research_queue_depth",
    "Research requests waiting for a concurrency slot.",
)
RESEARCH_IN_PROGRESS = Gauge(
    "podcrew_research_in_progress",
    "Research requests holding a concurrency slot.",
)
