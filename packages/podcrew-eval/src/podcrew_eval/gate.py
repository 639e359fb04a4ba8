"""The baseline gate: which figures got worse than a stored baseline by more than allowed.

Shares (0 to 1) may drop by `tolerance`, an absolute amount; counts and spend (effective
citations, judge quality, cost, tokens, LLM calls) may move the wrong way by
`spend_tolerance`, a share of the baseline. Latency is reported, never gated: it measures
the machine as much as the change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_TOLERANCE = 0.02
DEFAULT_SPEND_TOLERANCE = 0.10

Better = Literal["higher", "lower"]
Kind = Literal["share", "relative"]

GATED: dict[str, tuple[Better, Kind]] = {
    "outcome_accuracy": ("higher", "share"),
    "citation_validity": ("higher", "share"),
    "citation_accuracy": ("higher", "share"),
    "source_recall": ("higher", "share"),
    "key_facts": ("higher", "share"),
    "coverage": ("higher", "share"),
    "redundancy": ("lower", "share"),
    "effective_citations": ("higher", "relative"),
    "judge_quality": ("higher", "relative"),
    "cost_usd": ("lower", "relative"),
    "total_tokens": ("lower", "relative"),
    "llm_calls": ("lower", "relative"),
}


@dataclass(frozen=True, slots=True)
class Regression:
    """A figure worse than the baseline by more than its tolerance."""

    metric: str
    baseline: float
    current: float
    limit: float

    def __str__(self) -> str:
        return (
            f"{self.metric}: {self.current:.4g} against a baseline of {self.baseline:.4g} "
            f"(limit {self.limit:.4g})"
        )


def _limit(baseline: float, better: Better, kind: Kind, tolerance: float, spend: float) -> float:
    slack = tolerance if kind == "share" else abs(baseline) * spend
    return baseline - slack if better == "higher" else baseline + slack


def regressions(
    baseline: Mapping[str, float | int | None],
    current: Mapping[str, float | int | None],
    tolerance: float = DEFAULT_TOLERANCE,
    spend_tolerance: float = DEFAULT_SPEND_TOLERANCE,
) -> list[Regression]:
    """Every gated figure present in both summaries that is beyond its limit. A figure the
    baseline has and the current run lacks (no answered question left to measure it) is a
    regression too."""
    found: list[Regression] = []
    for metric, (better, kind) in GATED.items():
        before, now = baseline.get(metric), current.get(metric)
        if before is None:
            continue
        limit = _limit(float(before), better, kind, tolerance, spend_tolerance)
        if now is None:
            found.append(Regression(metric, float(before), float("nan"), limit))
            continue
        worse = now < limit if better == "higher" else now > limit
        if worse:
            found.append(Regression(metric, float(before), float(now), limit))
    return found
