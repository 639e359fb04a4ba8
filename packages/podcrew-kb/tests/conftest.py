"""Fixtures for the knowledge base's tests: the shipped embedding model (loaded once), and
document files made in the test, a real PDF among them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from podcrew_kb.embed import Embedder, load_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(path: Path, pages: list[str], outline: dict[str, int], title: str) -> None:
    """A PDF whose pages show `pages` in Helvetica, with outline entries (title → 0-based
    page) and a document title: made with pypdf, read back by pypdf's text extraction."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({_escape(text)}) Tj ET".encode("latin-1"))
        page.replace_contents(stream)
    for heading, page_number in outline.items():
        writer.add_outline_item(title=heading, page_number=page_number)
    writer.add_metadata({"/Title": title})
    with path.open("wb") as out:
        writer.write(out)


PdfMaker = Callable[[Path, list[str], dict[str, int], str], None]


@pytest.fixture
def make_pdf() -> PdfMaker:
    """`write_pdf`, for tests that need a real PDF file."""
    return write_pdf
