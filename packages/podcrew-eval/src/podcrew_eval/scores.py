"""The scores of one report, each a pure function of the run and the cited passages.

docs/evaluation.md defines each one and sets them beside DeepResearch Bench's FACT:
`citation_accuracy` is FACT's citation accuracy (supported ÷ checked statement-source
pairs) and `effective_citations` its effective citations (distinct supported pairs), with
podcrew's sources being knowledge-base passages instead of web pages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podcrew_eval.report import Report, Section, content_terms, parse_report, words

# Lexical support: at least this share of a statement's meaningful words is in the passage.
SUPPORT_THRESHOLD = 0.6
# Redundancy counts text that repeats a run of this many words found elsewhere in the report.
SHINGLE_WORDS = 8
# A section answers a planned sub-question when their headings share this share of words.
HEADING_MATCH = 0.5


@dataclass(frozen=True, slots=True)
class CitedPair:
    """A statement and one source it cites: the unit FACT checks. `key` names it in a
    judge's verdicts: (statement index in the report, source number)."""

    key: tuple[int, int]
    statement: str
    source_id: str | None


def cited_pairs(report: Report, numbered: Mapping[int, str]) -> list[CitedPair]:
    """Every distinct (statement, cited source) pair of the report; `numbered` maps a
    source number to its id (an unlisted number gives `source_id=None`)."""
    pairs: dict[tuple[str, int], CitedPair] = {}
    statements = [u for u in report.units if u.is_statement]
    for index, unit in enumerate(statements):
        for number in unit.numbers:
            # Deduplicated as FACT does: the same claim citing the same source counts once.
            pairs.setdefault(
                (unit.text, number), CitedPair((index, number), unit.text, numbered.get(number))
            )
    return list(pairs.values())


def lexical_support(statement: str, passage: str) -> float:
    """The share of the statement's meaningful words found in the passage (0 to 1)."""
    wanted = content_terms(statement)
    if not wanted:
        return 1.0
    return len(wanted & content_terms(passage)) / len(wanted)


@dataclass(frozen=True, slots=True)
class Support:
    """How a report's citations fare against the passages they cite."""

    checked: int
    supported: int
    unchecked: int
    effective: int

    @property
    def accuracy(self) -> float | None:
        return self.supported / self.checked if self.checked else None


def support(
    pairs: Sequence[CitedPair],
    passages: Mapping[str, str],
    verdicts: Mapping[tuple[int, int], bool] | None = None,
) -> Support:
    """Check each pair: by the judge's verdict when `verdicts` is given (a pair it gave no
    verdict stays unchecked), else lexically against its passage (a source whose passage is
    unknown stays unchecked)."""
    checked = supported = unchecked = 0
    effective: set[tuple[str, str]] = set()
    for pair in pairs:
        if verdicts is not None:
            verdict = verdicts.get(pair.key)
        elif pair.source_id is not None and pair.source_id in passages:
            score = lexical_support(pair.statement, passages[pair.source_id])
            verdict = score >= SUPPORT_THRESHOLD
        else:
            verdict = None
        if verdict is None:
            unchecked += 1
            continue
        checked += 1
        if verdict:
            supported += 1
            effective.add((pair.statement, pair.source_id or ""))
    return Support(checked, supported, unchecked, len(effective))


def citation_validity(report: Report, listed: Sequence[int]) -> tuple[list[int], list[int]]:
    """The cited numbers no listed source has (dangling), and the listed sources never cited
    (uncited), each sorted."""
    cited = set(report.cited_numbers)
    return sorted(cited - set(listed)), sorted(set(listed) - cited)


def source_matches(cited: str, expected: str) -> bool:
    """Whether a cited source id is the expected one: the same id, or a part of it (an
    expected `kb:doc.md` is met by any section of the file, `kb:doc.md#sec` by any chunk of
    the section, `kb:doc.md#sec~2` only by itself)."""
    return cited == expected or cited.startswith((f"{expected}#", f"{expected}~"))


def source_recall(cited_ids: Sequence[str], expected: Sequence[str]) -> float | None:
    """The share of expected sources that some cited source matches."""
    if not expected:
        return None
    found = sum(1 for e in expected if any(source_matches(c, e) for c in cited_ids))
    return found / len(expected)


def _states(section: Section, fact: str) -> bool:
    wanted = content_terms(fact)
    text = " ".join(u.text for u in section.units)
    if not wanted:  # a fact of short words only ("id()"): its words, as written
        return " ".join(words(fact)) in " ".join(words(text))
    return wanted <= content_terms(text)


def key_fact_recall(report: Report, facts: Sequence[str]) -> float | None:
    """The share of key facts whose every meaningful word is in one section of the report."""
    if not facts:
        return None
    found = sum(1 for f in facts if any(_states(s, f) for s in report.sections))
    return found / len(facts)


def _heading_match(heading: str, sub_question: str) -> float:
    a, b = content_terms(heading), content_terms(sub_question)
    return len(a & b) / len(a | b) if a | b else 0.0


def _answering_section(sections: Sequence[Section], sub_question: str) -> Section | None:
    best = max(sections, key=lambda s: _heading_match(s.heading, sub_question), default=None)
    if best is None or _heading_match(best.heading, sub_question) < HEADING_MATCH:
        return None
    return best


def coverage(
    report: Report, sub_questions: Sequence[str], unresearched: Sequence[str] = ()
) -> tuple[float | None, list[str]]:
    """The share of planned sub-questions the report answers, and those it does not.

    A sub-question is answered when a section headed like it cites a source; with no such
    heading, when a cited statement holds at least half of its meaningful words. One the
    run could not research is not answered."""
    if not sub_questions:
        return None, []
    missed = []
    for sub in sub_questions:
        section = _answering_section(report.sections, sub)
        if sub in unresearched:
            answered = False
        elif section is not None:
            answered = section.cites
        else:
            wanted = content_terms(sub)
            answered = any(
                u.numbers and len(wanted & content_terms(u.text)) * 2 >= len(wanted)
                for u in report.units
            )
        if not answered:
            missed.append(sub)
    return 1 - len(missed) / len(sub_questions), missed


def redundancy(report: Report) -> float | None:
    """The share of the report's words (headings, citations and the Sources list left out)
    inside a run of `SHINGLE_WORDS` words that also occurs elsewhere in the report."""
    units = [words(u.text) for u in report.units]
    total = sum(len(u) for u in units)
    if not total:
        return None
    shingles = Counter(
        tuple(u[i : i + SHINGLE_WORDS]) for u in units for i in range(len(u) - SHINGLE_WORDS + 1)
    )
    repeated = 0
    for u in units:
        covered = [False] * len(u)
        for i in range(len(u) - SHINGLE_WORDS + 1):
            if shingles[tuple(u[i : i + SHINGLE_WORDS])] > 1:
                covered[i : i + SHINGLE_WORDS] = [True] * SHINGLE_WORDS
        repeated += sum(covered)
    return repeated / total


def numbered_sources(result: Mapping[str, Any]) -> dict[int, str]:
    """A run result's sources list as {number: source id}."""
    return {int(ref["number"]): str(ref["source"]["id"]) for ref in result.get("sources", [])}


def read(result: Mapping[str, Any]) -> Report:
    """The run result's report, parsed."""
    return parse_report(str(result.get("report", "")))
