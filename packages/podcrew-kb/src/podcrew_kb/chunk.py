"""Sections to chunks: what a search returns, bounded in size, each with a stable id.

A chunk's id is the file's path relative to its source (after the source's name, when it has
one), then `#` and the anchor of its section: `guide/install.md#requirements`. A section
longer than one chunk continues in `…#requirements~2`, `~3`; text before a file's first
heading has no anchor (`notes.txt`, `notes.txt#~2`). So an id tells a reader which file to
open and where, and it moves only when that section's own text moves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from podcrew_kb.parse import Document, Section

# A chunk is cut near TARGET_CHARS: long enough to carry a claim with its context, short
# enough that five hits stay a small part of a model's context. Below MIN_CHARS the
# paragraph limit is waived, so one-line code samples join the prose around them.
TARGET_CHARS = 1200
MIN_CHARS = 400
MAX_CHARS = 2400
MAX_PARAGRAPHS = 3
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A searchable piece of a document: `title` names the document and section, `text` is
    the section's words (headings are in the title)."""

    id: str
    title: str
    text: str

    @property
    def indexed(self) -> str:
        """What both retrievers read: the title carries the section's words too."""
        return f"{self.title}\n\n{self.text}"


def chunk_id(path: str, anchor: str, part: int) -> str:
    """The id of the `part`-th (1-based) chunk of the section at `anchor` in `path`."""
    base = f"{path}#{anchor}" if anchor else path
    if part == 1:
        return base
    return f"{base}~{part}" if anchor else f"{base}#~{part}"


def _pack(items: Iterable[str], sep: str, full: Callable[[int, int, str], bool]) -> list[str]:
    """`items` joined by `sep` into pieces, a new piece begun before an item that
    `full(count, size, item)` says would overfill the current one (of `count` items and
    `size` characters, separators counted)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for item in items:
        if current and full(len(current), size, item):
            pieces.append(sep.join(current))
            current, size = [], 0
        current.append(item)
        size += len(item) + len(sep)
    if current:
        pieces.append(sep.join(current))
    return pieces


def _cut(paragraph: str) -> list[str]:
    """An oversized paragraph (a long table or code block) split at line boundaries, and a
    line longer than a chunk split where it must."""
    if len(paragraph) <= MAX_CHARS:
        return [paragraph]
    lines = [
        line[i : i + MAX_CHARS]
        for line in paragraph.splitlines()
        for i in range(0, len(line) or 1, MAX_CHARS)
    ]
    return _pack(lines, "\n", lambda _, size, line: size + len(line) + 1 > MAX_CHARS)


def _paragraph_full(count: int, size: int, piece: str) -> bool:
    over = size + len(piece) + 2 > MAX_CHARS or size + len(piece) > TARGET_CHARS
    return over or (count >= MAX_PARAGRAPHS and size >= MIN_CHARS)


def split_text(text: str) -> list[str]:
    """Paragraphs grouped into pieces of one to three (more when they are tiny) of about
    `TARGET_CHARS`, none over `MAX_CHARS`."""
    paragraphs = (p.strip("\n") for p in _BLANK_LINES.split(text) if p.strip())
    return _pack((piece for p in paragraphs for piece in _cut(p)), "\n\n", _paragraph_full)


def _title(document: Document, section: Section) -> str:
    if not section.heading or section.heading == document.title:
        return document.title
    return f"{document.title} > {section.heading}"


def chunk_document(path: str, document: Document) -> list[Chunk]:
    """The chunks of `document`, whose id path is `path`, in reading order."""
    chunks: list[Chunk] = []
    for section in document.sections:
        title = _title(document, section)
        for part, text in enumerate(split_text(section.text), start=1):
            chunks.append(Chunk(chunk_id(path, section.anchor, part), title, text))
    return chunks


def _key(text: str) -> str:
    return " ".join(text.split())


def drop_repeats(files: list[list[Chunk]]) -> list[Chunk]:
    """Every chunk of every file, a text repeated word for word in several files kept once,
    in the most specific file: the one with the fewest chunks (help pages often repeat whole
    sections of the page about the general topic)."""
    owner: dict[str, tuple[int, int]] = {}
    for position, chunks in enumerate(files):
        for chunk in chunks:
            claim = (len(chunks), position)
            key = _key(chunk.text)
            owner[key] = min(owner.get(key, claim), claim)
    kept: list[Chunk] = []
    emitted: set[str] = set()
    for position, chunks in enumerate(files):
        for chunk in chunks:
            key = _key(chunk.text)
            if owner[key][1] == position and key not in emitted:
                emitted.add(key)
                kept.append(chunk)
    return kept
