"""Documents to sections: Markdown, plain text, HTML and PDF, each read with the library that
knows its format (selectolax's Lexbor engine for HTML, pypdf for PDF).

A `Section` is a heading and the text under it, with the anchor a reader would follow to it:
a Markdown or HTML heading's slug (or its `id` attribute), or `page=N` in a PDF, which PDF
viewers open at that page. A file that cannot be read raises `ParseError`, so a caller can
skip it and go on with the others.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser, LexborNode

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES
# Files past this size are not documents someone wrote to be read; they are skipped.
MAX_FILE_BYTES = 64 * 1024 * 1024

# A heading is an ATX heading at the start of a line. Indented `#` lines are not headings
# here: the shipped corpus indents its code three spaces, and its comments start with `#`.
_HEADING = re.compile(r"^(?P<marks>#{1,6})[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^(```|~~~)")
_HTML_BLOCKS = "h1,h2,h3,h4,h5,h6,p,li,pre,blockquote,dt,dd,th,td,caption,figcaption"
_HTML_NOISE = "script,style,noscript,template,nav,svg,iframe,form,button"
_SPACE = re.compile(r"[ \t\r\f\v]+")


class ParseError(Exception):
    """A file that could not be read as its format says; it is skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class Section:
    """A heading (empty for text before the first one), its anchor, and its text."""

    heading: str
    anchor: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: its title and its sections in reading order."""

    title: str
    sections: list[Section]


def slugify(heading: str) -> str:
    """The anchor GitHub and most Markdown renderers give a heading: lower case, punctuation
    dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r" ", "-", text) or "section"


class _Anchors:
    """Unique anchors within one document, numbered as renderers number repeats (`x`,
    `x-1`, `x-2`)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        count = self._seen.get(base, 0)
        self._seen[base] = count + 1
        return base if count == 0 else f"{base}-{count}"


def parse_markdown(text: str, fallback_title: str) -> Document:
    """Sections along ATX headings (`#` … `######`); headings inside fenced code stay text."""
    anchors = _Anchors()
    sections: list[Section] = []
    heading, lines = "", []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        sections.append(_section(heading, lines, anchors))
        heading, lines = match.group("title"), []
    sections.append(_section(heading, lines, anchors))
    kept = [s for s in sections if s.text or s.heading]
    title = next((s.heading for s in kept if s.heading), fallback_title)
    return Document(title=title, sections=kept)


def _section(heading: str, lines: list[str], anchors: _Anchors) -> Section:
    anchor = anchors(slugify(heading)) if heading else ""
    return Section(heading=heading, anchor=anchor, text="\n".join(lines).strip("\n"))


def parse_text(text: str, fallback_title: str) -> Document:
    """Plain text is one section under the file's name."""
    return Document(title=fallback_title, sections=[Section("", "", text.strip("\n"))])


def parse_html(data: bytes, fallback_title: str) -> Document:
    """Sections along `<h1>`…`<h6>`, anchored at a heading's `id` when it has one; the text
    of the block elements between them, scripts, styles and navigation left out."""
    tree = LexborHTMLParser(data)
    title_node = tree.css_first("title")
    tree.strip_tags(_HTML_NOISE.split(","))
    body = tree.body
    if body is None:
        raise ParseError("the document has no body")
    anchors = _Anchors()
    sections: list[Section] = []
    heading, anchor = "", ""
    parts: list[str] = []
    for node in _outermost(body.css(_HTML_BLOCKS)):
        tag = node.tag or ""
        text = _node_text(node, keep_lines=tag == "pre")
        if len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            sections.append(Section(heading, anchor, "\n\n".join(parts)))
            heading, parts = text, []
            anchor = anchors(str(node.attributes.get("id") or "") or slugify(text))
        elif text:
            parts.append(text)
    sections.append(Section(heading, anchor, "\n\n".join(parts)))
    kept = [s for s in sections if s.text or s.heading]
    title = (title_node.text(strip=True) if title_node is not None else "") or next(
        (s.heading for s in kept if s.heading), fallback_title
    )
    return Document(title=title, sections=kept)


def _outermost(nodes: list[LexborNode]) -> Iterator[LexborNode]:
    """The block elements not inside another one (a `<p>` in an `<li>` is the `<li>`'s)."""
    blocks = set(_HTML_BLOCKS.split(","))
    for node in nodes:
        parent = node.parent
        while parent is not None and parent.tag not in blocks and parent.tag != "body":
            parent = parent.parent
        if parent is None or parent.tag not in blocks:
            yield node


def _node_text(node: LexborNode, *, keep_lines: bool) -> str:
    text = node.text(deep=True, separator="" if keep_lines else " ")
    if keep_lines:
        return text.strip("\n")
    return " ".join(text.split())


def parse_pdf(data: bytes, fallback_title: str) -> Document:
    """One section per page, anchored `page=N`, headed by the outline entry (bookmark) the
    page falls under, else "Page N"."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        headings = _outline_by_page(reader)
        title = (reader.metadata.title if reader.metadata else None) or fallback_title
        sections = []
        current = ""
        for number, page in enumerate(reader.pages, start=1):
            current = headings.get(number, current)
            text = _SPACE.sub(" ", page.extract_text() or "").strip()
            if text:
                sections.append(Section(current or f"Page {number}", f"page={number}", text))
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"unreadable PDF: {exc}") from exc
    return Document(title=str(title), sections=sections)


def _outline_by_page(reader: object) -> dict[int, str]:
    """The first outline title that points at each page (1-based)."""
    from pypdf import PdfReader

    assert isinstance(reader, PdfReader)
    found: dict[int, str] = {}
    stack: list[object] = list(reader.outline)
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[:0] = item
            continue
        try:
            page = reader.get_destination_page_number(item)  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if page is not None:
            found.setdefault(page + 1, str(getattr(item, "title", "")))
    return found


_PARSERS: dict[str, Callable[[bytes, str], Document]] = {
    **dict.fromkeys(MARKDOWN_SUFFIXES, lambda b, t: parse_markdown(_decode(b), t)),
    **dict.fromkeys(TEXT_SUFFIXES, lambda b, t: parse_text(_decode(b), t)),
    **dict.fromkeys(HTML_SUFFIXES, parse_html),
    **dict.fromkeys(PDF_SUFFIXES, parse_pdf),
}


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ParseError("binary content in a text file")
    return data.decode("utf-8", errors="replace")


def parse_bytes(suffix: str, data: bytes, fallback_title: str) -> Document:
    """`data` parsed as the format `suffix` names; `ParseError` if it cannot be."""
    parser = _PARSERS.get(suffix.lower())
    if parser is None:
        raise ParseError(f"unsupported file type {suffix!r}")
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"{len(data)} bytes is over the {MAX_FILE_BYTES}-byte limit")
    return parser(data, fallback_title)


def read_file(path: Path) -> bytes:
    """The bytes of a file to parse; `ParseError` if it is unreadable or too large to be a
    document (checked before reading it)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParseError(f"{size} bytes is over the {MAX_FILE_BYTES}-byte limit")
        return path.read_bytes()
    except OSError as exc:
        raise ParseError(f"unreadable: {exc}") from exc


def parse_file(path: Path) -> Document:
    """`path` parsed by its suffix; `ParseError` if it cannot be."""
    return parse_bytes(path.suffix, read_file(path), path.stem)
