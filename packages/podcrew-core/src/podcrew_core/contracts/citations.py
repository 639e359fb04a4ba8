"""How a report cites its sources, written once for every report podcrew composes.

A report cites a source as `[n]`. The sources are numbered 1, 2, … in the order the
findings first cite them, each distinct source (by id) once, and the report ends with a
"Sources" list of those numbers. The writer numbers the findings it hands its model this
way; a run that stops early composes its partial report with the same numbers and list, so
both read alike and every `[n]` points at a listed source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from podcrew_core.contracts.schemas import Finding, ResearchedSection, SourceRef


@dataclass(frozen=True, slots=True)
class NumberedSection:
    """A researched section whose findings carry their source's number."""

    sub_question: str
    findings: list[tuple[int, Finding]]


def number_sources(
    sections: Sequence[ResearchedSection],
) -> tuple[list[NumberedSection], list[SourceRef]]:
    """Number each distinct source once, in order of first appearance; returns the sections
    with each finding's number, and the numbered sources."""
    numbers: dict[str, int] = {}
    sources: list[SourceRef] = []
    numbered: list[NumberedSection] = []
    for section in sections:
        findings: list[tuple[int, Finding]] = []
        for finding in section.findings:
            n = numbers.get(finding.source.id)
            if n is None:
                n = numbers[finding.source.id] = len(numbers) + 1
                sources.append(SourceRef(number=n, source=finding.source))
            findings.append((n, finding))
        numbered.append(NumberedSection(section.sub_question, findings))
    return numbered, sources


def sources_section(sources: Sequence[SourceRef]) -> str:
    """The "Sources" list that ends a report (after a blank line); empty with no sources."""
    if not sources:
        return ""
    lines = ["", "## Sources", ""]
    for ref in sources:
        where = f" — {ref.source.url}" if ref.source.url else f" ({ref.source.id})"
        lines.append(f"{ref.number}. {ref.source.title}{where}")
    return "\n".join(lines) + "\n"
