"""A dataset, the scores of each of its runs, their summary per prompt version, and the
baseline gate.

A dataset is JSON Lines, one question a line:
`{"id", "question", "expected_sources"?: [...], "key_facts"?: [...], "expect"?: ...}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from podcrew_eval import scores

Expect = Literal["answer", "not_found", "refuse"]
Outcome = Literal["answer", "not_found", "rejected", "failed"]
UNVERSIONED = "unversioned"
# Which outcomes meet which expectation: a question the corpus does not cover is met by a
# report that cites nothing; one that should be refused also by the API turning it away.
_MEETS: dict[str, frozenset[str]] = {
    "answer": frozenset({"answer"}),
    "not_found": frozenset({"not_found"}),
    "refuse": frozenset({"not_found", "rejected"}),
}


class DatasetItem(BaseModel):
    """One line of a dataset."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=3)
    expected_sources: list[str] = Field(default_factory=list)
    key_facts: list[str] = Field(default_factory=list)
    expect: Expect = "answer"


def load_dataset(path: Path) -> list[DatasetItem]:
    """The items of a JSONL dataset (blank lines skipped); a bad line raises `ValueError`
    naming its line number, and so does an id used twice."""
    items: list[DatasetItem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(DatasetItem.model_validate_json(line))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: ids must be unique")
    return items


class ReportScore(BaseModel):
    """Every score of one dataset item's run (`None`: does not apply)."""

    id: str
    question: str
    expect: Expect
    outcome: Outcome
    outcome_ok: bool
    status: str
    prompt_version: str = UNVERSIONED
    run_id: str | None = None
    cached: bool = False
    citation_valid: bool | None = None
    dangling_citations: list[int] = Field(default_factory=list)
    uncited_sources: list[int] = Field(default_factory=list)
    statements: int = 0
    pairs_checked: int = 0
    pairs_supported: int = 0
    pairs_unchecked: int = 0
    citation_accuracy: float | None = None
    effective_citations: int = 0
    source_recall: float | None = None
    key_facts: float | None = None
    coverage: float | None = None
    uncovered: list[str] = Field(default_factory=list)
    redundancy: float | None = None
    judge_quality: float | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    latency_s: float | None = None


def outcome_of(run: Mapping[str, Any] | None) -> Outcome:
    """What a run came to: an answer citing sources, a report citing none, or no report."""
    if run is None:
        return "rejected"
    if run.get("status") != "succeeded" or not run.get("result"):
        return "failed"
    return "answer" if scores.read(run["result"]).cited_numbers else "not_found"


def _latency(run: Mapping[str, Any]) -> float | None:
    start, end = run.get("created_at"), run.get("finished_at")
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def score_run(
    item: DatasetItem,
    run: Mapping[str, Any] | None,
    passages: Mapping[str, str],
    verdicts: Mapping[tuple[int, int], bool] | None = None,
    judge_quality: float | None = None,
) -> ReportScore:
    """Score `item`'s run (`None`: the API refused it) against the cited `passages`; support
    by the judge's `verdicts` when given."""
    outcome = outcome_of(run)
    base = ReportScore(
        id=item.id,
        question=item.question,
        expect=item.expect,
        outcome=outcome,
        outcome_ok=outcome in _MEETS[item.expect],
        status="rejected" if run is None else str(run.get("status")),
    )
    if run is None:
        return base
    usage = run.get("usage") or {}
    base = base.model_copy(
        update={
            "prompt_version": str(run.get("prompt_version") or UNVERSIONED),
            "run_id": run.get("id"),
            "cached": bool(run.get("cached")),
            "cost_usd": float(usage.get("cost_usd", run.get("cost_usd", 0.0))),
            "input_tokens": int(usage.get("input_tokens", 0)),
            "output_tokens": int(usage.get("output_tokens", 0)),
            "llm_calls": int(usage.get("llm_calls", 0)),
            "latency_s": _latency(run),
        }
    )
    if not run.get("result"):
        return base
    return base.model_copy(
        update=_report_scores(item, run, passages, verdicts) | {"judge_quality": judge_quality}
    )


def _report_scores(
    item: DatasetItem,
    run: Mapping[str, Any],
    passages: Mapping[str, str],
    verdicts: Mapping[tuple[int, int], bool] | None,
) -> dict[str, Any]:
    result = run["result"]
    report = scores.read(result)
    numbered = scores.numbered_sources(result)
    dangling, uncited = scores.citation_validity(report, list(numbered))
    pairs = scores.cited_pairs(report, numbered)
    checked = scores.support(pairs, passages, verdicts)
    cited_ids = [numbered[n] for n in set(report.cited_numbers) if n in numbered]
    covered, missed = scores.coverage(
        report, run.get("sub_questions") or [], result.get("unresearched") or []
    )
    return {
        "citation_valid": not dangling and not uncited,
        "dangling_citations": dangling,
        "uncited_sources": uncited,
        "statements": sum(1 for u in report.units if u.is_statement),
        "pairs_checked": checked.checked,
        "pairs_supported": checked.supported,
        "pairs_unchecked": checked.unchecked,
        "citation_accuracy": checked.accuracy,
        "effective_citations": checked.effective,
        "source_recall": scores.source_recall(cited_ids, item.expected_sources),
        "key_facts": scores.key_fact_recall(report, item.key_facts),
        "coverage": covered if item.expect == "answer" else None,
        "uncovered": missed if item.expect == "answer" else [],
        "redundancy": scores.redundancy(report),
    }


# --- summaries --------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _p95(values: Iterable[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    return present[min(len(present) - 1, math.ceil(0.95 * len(present)) - 1)]


def summarize(rows: Sequence[ReportScore]) -> dict[str, float | int | None]:
    """The dataset-level figures of `rows`: means over the items each score applies to;
    citation accuracy pooled over every checked pair, as FACT pools its statements."""
    answered = [r for r in rows if r.outcome == "answer"]
    checked = sum(r.pairs_checked for r in rows)
    return {
        "items": len(rows),
        "outcome_accuracy": _mean(float(r.outcome_ok) for r in rows),
        "citation_validity": _mean(
            None if r.citation_valid is None else float(r.citation_valid) for r in answered
        ),
        "citation_accuracy": sum(r.pairs_supported for r in rows) / checked if checked else None,
        "effective_citations": _mean(float(r.effective_citations) for r in answered),
        "source_recall": _mean(r.source_recall for r in rows),
        "key_facts": _mean(r.key_facts for r in rows),
        "coverage": _mean(r.coverage for r in rows),
        "redundancy": _mean(r.redundancy for r in answered),
        "judge_quality": _mean(r.judge_quality for r in rows),
        "cost_usd": _mean(r.cost_usd for r in rows),
        "total_tokens": _mean(float(r.input_tokens + r.output_tokens) for r in rows),
        "llm_calls": _mean(float(r.llm_calls) for r in rows),
        "latency_s": _mean(r.latency_s for r in rows),
        "latency_p95_s": _p95(r.latency_s for r in rows),
    }


def by_version(rows: Sequence[ReportScore]) -> dict[str, dict[str, float | int | None]]:
    """`summarize` per prompt version (runs without one are "unversioned")."""
    versions = sorted({r.prompt_version for r in rows})
    return {v: summarize([r for r in rows if r.prompt_version == v]) for v in versions}


def results_document(
    rows: Sequence[ReportScore], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What `podcrew eval` writes as JSON (and reads back as a baseline)."""
    return {
        "summary": summarize(rows),
        "by_prompt_version": by_version(rows),
        **(extra or {}),
        "reports": [r.model_dump() for r in rows],
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """`document` as indented JSON, keys in a stable order for diffs."""
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
