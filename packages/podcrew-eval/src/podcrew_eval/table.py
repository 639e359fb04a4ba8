"""The markdown tables `podcrew eval` writes: the summary per prompt version, then a row per
question."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from podcrew_eval.suite import ReportScore

SUMMARY_COLUMNS = (
    ("items", "items"),
    ("outcome_accuracy", "outcome"),
    ("citation_validity", "citations valid"),
    ("citation_accuracy", "citation accuracy"),
    ("effective_citations", "effective citations"),
    ("source_recall", "source recall"),
    ("key_facts", "key facts"),
    ("coverage", "coverage"),
    ("redundancy", "redundancy"),
    ("judge_quality", "judge quality"),
    ("cost_usd", "cost $"),
    ("total_tokens", "tokens"),
    ("llm_calls", "LLM calls"),
    ("latency_s", "latency s"),
    ("latency_p95_s", "p95 s"),
)
ROW_COLUMNS = (
    "id",
    "expect",
    "outcome",
    "citation_valid",
    "citation_accuracy",
    "effective_citations",
    "source_recall",
    "coverage",
    "redundancy",
    "cost_usd",
    "llm_calls",
    "latency_s",
)


def cell(value: Any) -> str:
    """A figure as a table shows it: shares to 3 places, `-` where it does not apply."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(
    by_version: Mapping[str, Mapping[str, Any]],
    rows: Sequence[ReportScore],
    judge: Mapping[str, Any] | None = None,
) -> str:
    """The summary per prompt version and the per-question rows, as markdown."""
    lines = ["## Summary by prompt version", ""]
    lines += _table(
        ["prompt version", *(title for _, title in SUMMARY_COLUMNS)],
        [[v, *(cell(s.get(k)) for k, _ in SUMMARY_COLUMNS)] for v, s in by_version.items()],
    )
    if judge:
        lines += [
            "",
            "Judge (counted apart from the runs): "
            + ", ".join(f"{k} {cell(v)}" for k, v in judge.items()),
        ]
    lines += ["", "## Reports", ""]
    lines += _table(
        list(ROW_COLUMNS),
        [[cell(getattr(r, k)) for k in ROW_COLUMNS] for r in rows],
    )
    return "\n".join(lines) + "\n"
