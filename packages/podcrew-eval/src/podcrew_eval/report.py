"""Reading a markdown report as the scores see it: sections, units of text, citations.

A report is a title (`# …`), sections (`## …`) and a closing "Sources" list. Each section's
text is cut into units: a list item is one unit (podcrew's offline writer writes a finding
as one bullet of one or two sentences), other text one unit per sentence. A citation is
`[n]` (or `[n, m]`) after a space or another citation, as podcrew's writers append it, so
code such as `x[0]` quoted in a passage is not read as one.

A unit with fewer than `MIN_STATEMENT_TERMS` meaningful words outside its citations ("See
also [1] above.") is a cross-reference, not a statement: it asserts nothing a source could support.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CITATION = re.compile(r"(?:(?<=\s)|(?<=\]))\[(\d+(?:\s*,\s*\d+)*)\]")
MIN_STATEMENT_TERMS = 4
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
# A sentence ends at . ! ? (or a citation after one) before a capital or an opening mark.
_SENTENCE_END = re.compile(r"(?<=[.!?\]])\s+(?=[A-Z*\"“(])")
_WORD = re.compile(r"[a-z0-9_]+")
_SOURCES_HEADINGS = frozenset({"sources", "references"})
_STOPWORDS_TEXT = """
a an and are as at be by can do does for from has have how in is it its of on or that the
their then there these this those to was were what when where which who why will with
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def words(text: str) -> list[str]:
    """The lower-case words of `text`, in order."""
    return _WORD.findall(text.lower())


def content_terms(text: str) -> set[str]:
    """The words of `text` that carry meaning: no stopwords, none under three letters, a
    plural's trailing `s` dropped so "generators" meets "generator"."""
    return {_singular(w) for w in words(text) if len(w) > 2 and w not in STOPWORDS}


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@dataclass(frozen=True, slots=True)
class Unit:
    """A bullet or a sentence: its text without citations and the source numbers it cites."""

    text: str
    numbers: tuple[int, ...]

    @property
    def is_statement(self) -> bool:
        """Whether it states something (cross-references do not)."""
        return bool(self.numbers) and len(content_terms(self.text)) >= MIN_STATEMENT_TERMS


@dataclass(slots=True)
class Section:
    """A `##` section (or the text before the first one, with an empty heading)."""

    heading: str
    units: list[Unit] = field(default_factory=list)

    @property
    def cites(self) -> bool:
        return any(unit.numbers for unit in self.units)


@dataclass(slots=True)
class Report:
    """A report's title, its sections (the Sources list left out) and every `[n]` used."""

    title: str
    sections: list[Section]

    @property
    def units(self) -> list[Unit]:
        return [unit for section in self.sections for unit in section.units]

    @property
    def cited_numbers(self) -> list[int]:
        """Every citation mark, in order, repeats included."""
        return [n for unit in self.units for n in unit.numbers]


def _numbers(marks: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.split(r"\s*,\s*", marks))


def split_unit(text: str) -> Unit:
    """A unit of `text`: the numbers it cites, and its words without the citations."""
    numbers = tuple(n for m in CITATION.finditer(text) for n in _numbers(m.group(1)))
    plain = " ".join(CITATION.sub(" ", text).split())
    return Unit(plain, numbers)


def _units(lines: list[str]) -> list[Unit]:
    """A section's units: each list item, then each sentence of each other paragraph."""
    units: list[Unit] = []
    paragraph: list[str] = []

    def flush() -> None:
        text = " ".join(paragraph).strip()
        paragraph.clear()
        units.extend(split_unit(s) for s in _SENTENCE_END.split(text) if s.strip())

    for line in lines:
        if _LIST_ITEM.match(line):
            flush()
            units.append(split_unit(_LIST_ITEM.sub("", line, count=1)))
        elif line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return [u for u in units if u.text or u.numbers]


def parse_report(markdown: str) -> Report:
    """`markdown` read into its title and sections; the "Sources" section is dropped, since
    its list restates the sources rather than citing them."""
    title = ""
    sections: list[Section] = []
    heading: str | None = ""
    lines: list[str] = []

    def close() -> None:
        if heading is not None and (heading or any(line.strip() for line in lines)):
            sections.append(Section(heading, _units(lines)))
        lines.clear()

    for line in markdown.splitlines():
        match = _HEADING.match(line)
        if match and len(match.group(1)) == 1 and not title and not sections and not lines:
            title = match.group(2)
            continue
        if match:
            close()
            text = match.group(2)
            heading = None if text.strip().lower() in _SOURCES_HEADINGS else text
            continue
        lines.append(line)
    close()
    return Report(title, [s for s in sections if s.units or s.heading])
