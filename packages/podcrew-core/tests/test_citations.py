"""A report's citation numbers and its Sources list."""

from __future__ import annotations

from podcrew_core.contracts.citations import number_sources, sources_section
from podcrew_core.contracts.schemas import Finding, ResearchedSection, Source, SourceRef

A = Source(id="kb:a#1", title="A")
B = Source(id="https://example.org/b", title="B", url="https://example.org/b")


def test_each_distinct_source_is_numbered_once_in_order_of_first_citation() -> None:
    sections = [
        ResearchedSection(sub_question="S1?", findings=[Finding(claim="c1", source=B)]),
        ResearchedSection(sub_question="S2?", findings=[]),
        ResearchedSection(
            sub_question="S3?",
            findings=[Finding(claim="c2", source=A), Finding(claim="c3", source=B)],
        ),
    ]
    numbered, sources = number_sources(sections)
    assert [s.sub_question for s in numbered] == ["S1?", "S2?", "S3?"]
    assert [[(n, f.claim) for n, f in s.findings] for s in numbered] == [
        [(1, "c1")],
        [],
        [(2, "c2"), (1, "c3")],
    ]
    assert sources == [SourceRef(number=1, source=B), SourceRef(number=2, source=A)]


def test_the_sources_list_names_each_source_by_its_url_or_else_its_id() -> None:
    refs = [SourceRef(number=1, source=B), SourceRef(number=2, source=A)]
    assert sources_section(refs) == (
        "\n## Sources\n\n1. B — https://example.org/b\n2. A (kb:a#1)\n"
    )
    assert sources_section([]) == ""
