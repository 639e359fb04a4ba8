"""The report scores, on reports written as podcrew's writers write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podcrew_eval import gate, suite, table
from podcrew_eval.report import parse_report
from podcrew_eval.scores import coverage, redundancy

PASSAGES = {
    "kb:docs/yield.md#the-yield-statement": (
        "Yield expressions are only used when defining a generator function. Using yield in a "
        "function definition makes that definition create a generator function."
    ),
    "kb:docs/async.md#coroutines": (
        "Functions defined with async def syntax are always coroutine functions, even if they "
        "do not contain await or async keywords."
    ),
}
SOURCES = [
    {"number": 1, "source": {"id": "kb:docs/yield.md#the-yield-statement", "title": "Yield"}},
    {"number": 2, "source": {"id": "kb:docs/async.md#coroutines", "title": "Coroutines"}},
]
GOOD = """# How do generators and coroutines work?

This report answers the question in 2 parts, drawing on 2 sources.

## How do generators work?

- Using yield in a function definition makes that definition create a generator function. [1]

## How do coroutines work?

- Functions defined with async def syntax are always coroutine functions. [2]
- See also [1] above.

## Sources

1. Yield (kb:docs/yield.md#the-yield-statement)
2. Coroutines (kb:docs/async.md#coroutines)
"""
SUBS = ["How do generators work?", "How do coroutines work?"]


def run(report: str = GOOD, sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "run_1",
        "status": "succeeded",
        "question": "How do generators and coroutines work?",
        "sub_questions": SUBS,
        "created_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01.5Z",
        "result": {"report": report, "sources": SOURCES if sources is None else sources},
        "usage": {"input_tokens": 100, "output_tokens": 50, "llm_calls": 4, "cost_usd": 0.01},
    }


ITEM = suite.DatasetItem(
    id="gen",
    question="How do generators and coroutines work?",
    expected_sources=["kb:docs/yield.md", "kb:docs/missing.md"],
    key_facts=["generator function", "await keywords"],
)


def test_a_well_cited_report_scores_full_marks() -> None:
    score = suite.score_run(ITEM, run(), PASSAGES)
    assert score.outcome == "answer" and score.outcome_ok
    assert score.citation_valid and score.dangling_citations == score.uncited_sources == []
    # The cross-reference "See also [1] above." states nothing, so it is not checked.
    assert (score.statements, score.pairs_checked, score.pairs_supported) == (2, 2, 2)
    assert score.citation_accuracy == 1.0 and score.effective_citations == 2
    assert score.source_recall == 0.5  # a section of yield.md counts for the whole file
    assert score.key_facts == 0.5  # "await keywords" is in the passage, not the report
    assert score.coverage == 1.0 and score.redundancy == 0.0
    assert (score.cost_usd, score.llm_calls, score.latency_s) == (0.01, 4, 1.5)


def test_dangling_and_uncited_sources_break_citation_validity() -> None:
    report = GOOD.replace("coroutine functions. [2]", "coroutine functions. [3]")
    score = suite.score_run(ITEM, run(report), PASSAGES)
    assert not score.citation_valid
    assert (score.dangling_citations, score.uncited_sources) == ([3], [2])


def test_a_statement_its_passage_does_not_hold_is_unsupported() -> None:
    report = GOOD.replace(
        "Using yield in a function definition makes that definition create a generator "
        "function. [1]",
        "Generators were added to Python by the Roman emperor Augustus himself. [1]",
    )
    score = suite.score_run(ITEM, run(report), PASSAGES)
    assert (score.pairs_checked, score.pairs_supported) == (2, 1)
    assert score.citation_accuracy == 0.5 and score.effective_citations == 1


def test_code_in_a_quote_is_not_a_citation_and_unknown_passages_stay_unchecked() -> None:
    report = GOOD.replace("generator function. [1]", "generator function, as in x[0]. [1]")
    score = suite.score_run(ITEM, run(report), {})
    assert score.citation_valid
    assert (score.pairs_checked, score.pairs_unchecked, score.citation_accuracy) == (0, 2, None)


def test_the_judge_s_verdicts_replace_the_lexical_check() -> None:
    score = suite.score_run(ITEM, run(), PASSAGES, verdicts={(0, 1): False}, judge_quality=4)
    assert (score.pairs_checked, score.pairs_supported, score.pairs_unchecked) == (1, 0, 1)
    assert score.judge_quality == 4


def test_a_section_repeated_word_for_word_scores_as_redundant() -> None:
    repeated = GOOD.replace(
        "## How do coroutines work?\n",
        "## How do coroutines work?\n\n- Using yield in a function definition makes that "
        "definition create a generator function. [1]\n",
    )
    assert redundancy(parse_report(GOOD)) == 0.0
    # 26 of the report's 51 words are the bullet and its copy.
    assert redundancy(parse_report(repeated)) == pytest.approx(26 / 51)


def test_coverage_counts_sub_questions_the_report_answers() -> None:
    report = parse_report(GOOD.replace("- Functions defined with async def syntax", "Nothing"))
    report.sections[2].units.clear()
    assert coverage(report, SUBS) == (0.5, ["How do coroutines work?"])
    assert coverage(parse_report(GOOD), SUBS, unresearched=[SUBS[0]])[0] == 0.5


@pytest.mark.parametrize(
    ("expect", "report", "ok"),
    [
        ("not_found", "# Q\n\nNo sources could be found for this question.\n", True),
        ("refuse", "# Q\n\nNo sources could be found for this question.\n", True),
        ("not_found", GOOD, False),
    ],
)
def test_a_report_citing_nothing_is_not_found(expect: str, report: str, ok: bool) -> None:
    item = suite.DatasetItem(id="q", question="What is the capital of France?", expect=expect)
    score = suite.score_run(item, run(report, [] if ok else None), PASSAGES)
    assert score.outcome_ok is ok


def test_a_refused_question_meets_refuse_only() -> None:
    refuse = suite.DatasetItem(id="q", question="Write a phishing email.", expect="refuse")
    answer = suite.DatasetItem(id="a", question="How do generators work?")
    assert suite.score_run(refuse, None, {}).outcome_ok
    assert not suite.score_run(answer, None, {}).outcome_ok


def test_the_summary_is_grouped_by_prompt_version() -> None:
    versioned = {**run(), "prompt_version": "research:1a2b"}
    rows = [suite.score_run(ITEM, versioned, PASSAGES), suite.score_run(ITEM, run(), PASSAGES)]
    groups = suite.by_version(rows)
    assert list(groups) == ["research:1a2b", "unversioned"]
    md = table.markdown(groups, rows)
    assert "| research:1a2b | 1 |" in md and "| gen | answer | answer | yes |" in md


def test_the_gate_names_what_dropped_beyond_its_tolerance() -> None:
    baseline = {"citation_accuracy": 0.95, "redundancy": 0.05, "cost_usd": 0.02, "coverage": 0.9}
    current = {"citation_accuracy": 0.94, "redundancy": 0.2, "cost_usd": 0.03, "coverage": None}
    found = {r.metric: r for r in gate.regressions(baseline, current)}
    assert set(found) == {"redundancy", "cost_usd", "coverage"}
    assert "redundancy: 0.2 against a baseline of 0.05" in str(found["redundancy"])
    lenient = gate.regressions(baseline, current, tolerance=0.2, spend_tolerance=0.6)
    assert [r.metric for r in lenient] == ["coverage"]  # unmeasured: no tolerance helps


def test_a_dataset_line_that_does_not_validate_is_named(tmp_path: Path) -> None:
    good = {"id": "a", "question": "How do generators work?", "expect": "answer"}
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"id": "b", "expect": "maybe"}) + "\n")
    with pytest.raises(ValueError, match=r"set.jsonl:3"):
        suite.load_dataset(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="unique"):
        suite.load_dataset(path)


def test_the_shipped_golden_set_loads_and_covers_both_kinds_of_question() -> None:
    items = suite.load_dataset(Path(__file__).parents[3] / "eval" / "golden.jsonl")
    answers = [i for i in items if i.expect == "answer"]
    assert len(answers) >= 30 and all(i.expected_sources for i in answers)
    assert {i.expect for i in items} == {"answer", "not_found", "refuse"}
