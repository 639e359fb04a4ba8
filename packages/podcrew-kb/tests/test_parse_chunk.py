"""Each format parsed into sections with anchors; sections chunked with stable, bounded ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from podcrew_kb.chunk import MAX_CHARS, Chunk, chunk_document, drop_repeats, split_text
from podcrew_kb.parse import Document, ParseError, Section, parse_file, slugify


def _sections(document: Document) -> list[tuple[str, str, str]]:
    return [(s.heading, s.anchor, s.text) for s in document.sections]


def test_markdown_splits_at_headings_but_not_inside_code_fences(tmp_path: Path) -> None:
    path = tmp_path / "install.md"
    path.write_text(
        "Intro before any heading.\n\n# Install Guide\n\nRead this.\n\n## Requirements\n\n"
        "Python 3.11.\n\n```bash\n# not a heading\npip install x\n```\n\n"
        "## Requirements\n\nAgain.\n\n   # indented code comment\n",
        encoding="utf-8",
    )
    document = parse_file(path)

    assert document.title == "Install Guide"
    assert _sections(document) == [
        ("", "", "Intro before any heading."),
        ("Install Guide", "install-guide", "Read this."),
        (
            "Requirements",
            "requirements",
            "Python 3.11.\n\n```bash\n# not a heading\npip install x\n```",
        ),
        ("Requirements", "requirements-1", "Again.\n\n   # indented code comment"),
    ]


def test_plain_text_is_one_section_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("# not markdown here\n\nplain words\n", encoding="utf-8")
    assert parse_file(path) == Document(
        "notes", [Section("", "", "# not markdown here\n\nplain words")]
    )


def test_html_sections_follow_headings_and_drop_scripts_and_navigation(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Ops Handbook</title><style>p{}</style></head><body>"
        "<nav><a href='/'>Home</a></nav>"
        "<h1>Handbook</h1><p>Welcome <b>aboard</b>.</p>"
        "<h2 id='on-call'>On call &amp; paging</h2><ul><li><p>Answer within</p> 5 minutes</li></ul>"
        "<script>alert('x')</script><pre>kubectl get pods\n  -n ops</pre>"
        "<h2>On call &amp; paging</h2><p>Twice.</p></body></html>",
        encoding="utf-8",
    )
    document = parse_file(path)

    assert document.title == "Ops Handbook"
    assert _sections(document) == [
        ("Handbook", "handbook", "Welcome aboard ."),
        ("On call & paging", "on-call", "Answer within 5 minutes\n\nkubectl get pods\n  -n ops"),
        ("On call & paging", "on-call--paging", "Twice."),
    ]


def test_pdf_pages_are_sections_headed_by_the_outline(
    tmp_path: Path, make_pdf: Callable[[Path, list[str], dict[str, int], str], None]
) -> None:
    path = tmp_path / "manual.pdf"
    make_pdf(
        path,
        ["Install the frobnicator first.", "Then set the key.", "Backups run nightly."],
        {"Installing": 0, "Backups": 2},
        "Ops Manual",
    )
    document = parse_file(path)

    assert document.title == "Ops Manual"
    assert _sections(document) == [
        ("Installing", "page=1", "Install the frobnicator first."),
        ("Installing", "page=2", "Then set the key."),
        ("Backups", "page=3", "Backups run nightly."),
    ]
    ids = [c.id for c in chunk_document("manual.pdf", document)]
    assert ids == ["manual.pdf#page=1", "manual.pdf#page=2", "manual.pdf#page=3"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.pdf", b"%PDF-1.7\nnot really"),
        ("binary.md", b"\x00\x01\x02 not text"),
        ("data.json", b"{}"),
    ],
)
def test_unreadable_files_raise_parse_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ParseError):
        parse_file(path)


def test_slugs_are_the_anchors_markdown_renderers_make() -> None:
    assert slugify('The "yield" statement') == "the-yield-statement"
    assert slugify("Mapping Types — dict") == "mapping-types--dict"
    assert slugify("C++ & Rust!") == "c--rust"
    assert slugify("???") == "section"


def test_long_sections_continue_in_numbered_chunks_of_bounded_size() -> None:
    paragraph = "word " * 150
    text = "\n\n".join([paragraph] * 6) + "\n\n" + "x" * (MAX_CHARS * 2 + 10)
    document = Document("Doc", [Section("Part", "part", text), Section("", "", "tail")])

    chunks = chunk_document("dir/doc.md", document)

    assert [c.id for c in chunks][:3] == [
        "dir/doc.md#part",
        "dir/doc.md#part~2",
        "dir/doc.md#part~3",
    ]
    assert chunks[-1] == Chunk("dir/doc.md", "Doc", "tail")
    assert all(len(c.text) <= MAX_CHARS for c in chunks)
    assert all(c.title == "Doc > Part" for c in chunks[:-1])
    assert "".join(p.replace("\n", "") for p in split_text("x" * (MAX_CHARS * 2 + 10))) == "x" * (
        MAX_CHARS * 2 + 10
    )


def test_an_edit_in_one_section_leaves_the_other_ids_alone() -> None:
    before = Document("D", [Section("A", "a", "alpha"), Section("B", "b", "beta")])
    after = Document(
        "D", [Section("A", "a", "alpha\n\n" + "new " * 400), Section("B", "b", "beta")]
    )
    old = {c.id: c.text for c in chunk_document("d.md", before)}
    new = {c.id: c.text for c in chunk_document("d.md", after)}
    assert new["d.md#b"] == old["d.md#b"] == "beta"
    assert "d.md#a~2" in new


def test_repeated_text_is_kept_once_in_the_most_specific_file() -> None:
    shared = Chunk("all.md#x", "All", "A context manager defines a runtime context.")
    general = [shared, Chunk("all.md#other", "All", "other")]
    specific = [Chunk("with.md#with", "With", shared.text)]

    kept = drop_repeats([general, specific])

    assert [c.id for c in kept] == ["all.md#other", "with.md#with"]
