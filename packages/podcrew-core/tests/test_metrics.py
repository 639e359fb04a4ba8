"""Labelled children looked up from a dict are the metric's own children."""

from __future__ import annotations

from prometheus_client import REGISTRY

from podcrew_core.runtime.metrics import TOOL_CALLS, Children


def test_children_count_on_the_metric_itself() -> None:
    children = Children(TOOL_CALLS)
    assert children("unit_tool", "ok") is TOOL_CALLS.labels("unit_tool", "ok")
    before = REGISTRY.get_sample_value(
        "podcrew_tool_calls_total", {"tool": "unit_tool", "outcome": "ok"}
    )
    children("unit_tool", "ok").inc()
    after = REGISTRY.get_sample_value(
        "podcrew_tool_calls_total", {"tool": "unit_tool", "outcome": "ok"}
    )
    assert after == (before or 0.0) + 1
