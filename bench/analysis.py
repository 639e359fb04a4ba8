"""Turning raw measurements into the report's numbers.

Inputs: the load generator's per-run records, the simulated server's call log (each call
tagged with its run by `simtap`), the services' `llm_call` log lines, their Prometheus
metrics, and each run's event stream. Pure functions, so the smoke test can check them.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PLAN_TOOL = "submit_plan"
FINDINGS_TOOL = "submit_findings"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    """p50/p95/p99/mean of `values` times `scale` (e.g. 1000 for ms)."""

    def scaled(v: float | None) -> float | None:
        return None if v is None else round(v * scale, 4)

    return {
        "p50": scaled(percentile(values, 50)),
        "p95": scaled(percentile(values, 95)),
        "p99": scaled(percentile(values, 99)),
        "mean": scaled(sum(values) / len(values)) if values else None,
        "n": len(values),
    }


def stage_of(call: dict[str, Any]) -> str:
    """Which pipeline stage a simulator call served."""
    if call.get("stream"):
        return "write"
    tools = call.get("tools_offered") or []
    if PLAN_TOOL in tools:
        return "plan"
    if FINDINGS_TOOL in tools:
        return "research"
    return "other"


def calls_by_tag(calls: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        if call.get("tag"):
            grouped[call["tag"]].append(call)
    return grouped


def critical_path(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """plan + the slowest research call (the sum of its sequential LLM calls) + write, from
    the simulator's own durations: the time a run cannot go below whatever podcrew does."""
    plan = write = 0.0
    research: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for call in calls:
        duration = call.get("duration_s")
        if duration is None:
            return None  # still in flight: not a complete run
        stage = stage_of(call)
        counts[stage] += 1
        if stage == "plan":
            plan += duration
        elif stage == "write":
            write += duration
        elif stage == "research":
            research[call.get("sub_question") or "?"] += duration
    if not counts["plan"] or not counts["write"] or not research:
        return None
    slowest = max(research, key=lambda k: research[k])
    return {
        "critical_s": plan + research[slowest] + write,
        "plan_s": plan,
        "research_s": research[slowest],
        "write_s": write,
        "slowest_sub_question": slowest,
        "llm_calls": sum(counts.values()),
        "fanout": len(research),
        "first_received_at": min(c["received_at"] for c in calls),
        "last_finished_at": max(c["finished_at"] for c in calls),
    }


def _usage_key(stage: str, usage: dict[str, Any]) -> tuple[Any, ...]:
    return (
        stage,
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        usage.get("cache_read_input_tokens", usage.get("cache_read_tokens")),
        usage.get("cache_creation_input_tokens", usage.get("cache_creation_tokens")),
    )


def llm_hop_overheads(
    calls_for_run: dict[str, list[dict[str, Any]]],
    log_lines_for_run: dict[str, list[dict[str, Any]]],
) -> dict[str, list[float]]:
    """Per LLM call: the calling agent's measured latency (`llm_call` log line, SDK and HTTP
    client included) minus the simulator's own duration for the same call, by stage.

    A log line and a simulator call are the same call when run, stage and the four token
    counts agree; equal keys pair up in time order."""
    out: dict[str, list[float]] = defaultdict(list)
    for run_id, lines in log_lines_for_run.items():
        calls = calls_for_run.get(run_id, [])
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for call in sorted(calls, key=lambda c: c.get("finished_at") or 0):
            if call.get("status") == 200 and call.get("usage"):
                by_key[_usage_key(stage_of(call), call["usage"])].append(call)
        for line in sorted(lines, key=lambda ln: ln.get("timestamp", "")):
            key = _usage_key(line.get("stage", ""), line)
            matches = by_key.get(key)
            if not matches:
                continue
            call = matches.pop(0)
            out[line["stage"]].append(float(line["latency_s"]) - float(call["duration_s"]))
    return out


# --- Prometheus -------------------------------------------------------------------------


def histogram_totals(text: str, name: str, **labels: str) -> tuple[float, float]:
    """(sum, count) of one histogram series in a /metrics page, matching `labels`."""
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name == f"{name}_sum":
                total += sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
    return total, count


def histogram_buckets(text: str, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound → count) of one histogram in a /metrics page,
    summed over the series matching `labels`."""
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            buckets[float(sample.labels["le"])] += sample.value
    return dict(buckets)


def bucket_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The q-quantile (0..1) of the observations made between two bucket readings,
    interpolated linearly inside its bucket, as PromQL's `histogram_quantile` does."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower_bound = lower_count = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return None


def mean_delta(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean of the observations made between two (sum, count) readings."""
    count = after[1] - before[1]
    return (after[0] - before[0]) / count if count > 0 else None


# --- timeline ---------------------------------------------------------------------------

SEGMENTS = (
    ("accept", "client sends POST → run.queued written (api)"),
    ("queue", "run.queued → run.started (Redis stream hop, worker picks up)"),
    ("plan_out", "run.started → plan call reaches the LLM"),
    ("plan_back", "plan call answered → run.planned"),
    ("research_out", "run.planned → first LLM call of the slowest research call"),
    ("research_between", "LLM answer → next LLM call in the research loop (tools, agent)"),
    ("research_back", "last research LLM answer → research.finished (agent → worker)"),
    ("fanin", "slowest research.finished → writer.started"),
    ("write_out", "writer.started → write call reaches the LLM"),
    ("write_back", "write stream ends at the LLM → run.succeeded (relay of deltas, store)"),
    ("notify", "run.succeeded → client has the result"),
)


def timeline(
    record: dict[str, Any], calls: list[dict[str, Any]], events: list[tuple[str, dict[str, Any]]]
) -> dict[str, float] | None:
    """Where one run's time outside the LLM went, segment by segment along the critical path
    (wall clocks of one machine: the client's, the services' event `ts`, the simulator's).
    A run executed more than once (reclaimed) is followed in its last attempt."""
    starts = [i for i, (kind, _) in enumerate(events) if kind == "run.started"]
    if starts and starts[-1] > 0:
        last_start = float(events[starts[-1]][1].get("ts", 0))
        events = [e for e in events if e[0] == "run.queued"] + events[starts[-1] :]
        calls = [c for c in calls if c["received_at"] >= last_start]
    first: dict[str, float] = {}
    research_started: dict[int, float] = {}
    research_finished: dict[int, float] = {}
    subs: list[str] = []
    for kind, data in events:
        ts = float(data.get("ts", 0))
        if kind == "research.started":
            research_started[int(data["index"])] = ts
        elif kind == "research.finished":
            research_finished[int(data["index"])] = ts
        elif kind == "run.planned":
            subs = list(data.get("sub_questions", []))
        first.setdefault(kind, ts)
    if not {"run.queued", "run.started", "run.planned", "writer.started"} <= set(first):
        return None
    if "run.succeeded" not in first or not subs:
        return None
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c["received_at"]):
        stage = stage_of(call)
        by_stage[stage].append(call)
        if stage == "research":
            chains[call.get("sub_question") or "?"].append(call)
    if not by_stage["plan"] or not by_stage["write"] or not chains:
        return None
    # The slowest research call is the one whose research.finished came last.
    index = max(research_finished, key=lambda i: research_finished[i], default=None)
    if index is None or index >= len(subs) or subs[index] not in chains:
        return None
    chain = chains[subs[index]]
    plan, write = by_stage["plan"][-1], by_stage["write"][-1]
    between = sum(b["received_at"] - a["finished_at"] for a, b in itertools.pairwise(chain))
    return {
        "accept": first["run.queued"] - record["submitted_at"],
        "queue": first["run.started"] - first["run.queued"],
        "plan_out": plan["received_at"] - first["run.started"],
        "plan_back": first["run.planned"] - plan["finished_at"],
        "research_out": chain[0]["received_at"] - first["run.planned"],
        "research_between": between,
        "research_back": research_finished[index] - chain[-1]["finished_at"],
        "fanin": first["writer.started"] - research_finished[index],
        "write_out": write["received_at"] - first["writer.started"],
        "write_back": first["run.succeeded"] - write["finished_at"],
        "notify": record["completed_at"] - first["run.succeeded"],
    }


def throughput(runs: list[dict[str, Any]], window_s: float | None = None) -> dict[str, float]:
    """Completed runs per second: over the whole level (first submission to last answer),
    and in the steady part (from the first answer to the last submission), when a closed loop
    had every user busy; a duration-limited level reports its window."""
    ok = [r for r in runs if r.get("ok")]
    if not runs:
        return {"overall_rps": 0.0, "steady_rps": 0.0}
    start = min(r["submitted_at"] for r in runs)
    end = max(r["completed_at"] for r in runs)
    overall = len(ok) / (window_s or (end - start)) if (window_s or end > start) else 0.0
    first_done = min(r["completed_at"] for r in runs)
    last_submit = max(r["submitted_at"] for r in runs)
    steady = overall
    if window_s is None and last_submit - first_done >= 2.0:
        inside = [r for r in ok if first_done < r["completed_at"] <= last_submit]
        steady = len(inside) / (last_submit - first_done)
    return {"overall_rps": round(overall, 3), "steady_rps": round(steady, 3)}


def event_digest(ids: list[str]) -> str:
    """What the load generator reports for the event ids one stream delivered, in order."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()
