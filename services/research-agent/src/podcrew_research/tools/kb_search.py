"""`kb_search`: BM25 over a directory of markdown and text files, built once at startup.

Each file is split into passages of one to three paragraphs; a passage is what a hit
returns, identified as `kb:<file-stem>#<n>` and titled by the file's first heading.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
from bm25s.stopwords import STOPWORDS_EN
from bm25s.tokenization import Tokenizer
from pydantic import BaseModel, Field

from podcrew_core.contracts.schemas import Source
from podcrew_core.llm.types import ToolSpec
from podcrew_research.tools import Tool, ToolOutput, parse_input

KB_SEARCH_TOOL = "kb_search"

SUFFIXES = frozenset({".md", ".txt"})
MAX_PARAGRAPHS = 3
# A passage is cut near this size: long enough to carry a claim with its context, short
# enough that five hits stay a small part of the loop's token budget. Below MIN_CHARS the
# paragraph limit is waived, so one-line code samples join the prose around them.
TARGET_CHARS = 1200
MIN_CHARS = 400
MAX_CHARS = 2400
# Python keywords are English stopwords too ("with", "if", "for", "in"); in a corpus about
# Python they name statements, so they must stay searchable.
STOPWORDS = sorted(set(STOPWORDS_EN) - set(keyword.kwlist))


class KbSearchInput(BaseModel):
    """What the model asks `kb_search` for."""

    query: str = Field(min_length=1, max_length=500, description="What to look for.")
    k: int = Field(default=5, ge=1, le=10, description="How many passages to return.")


KB_SEARCH_SPEC = ToolSpec(
    name=KB_SEARCH_TOOL,
    description="Search the knowledge base; returns the best-matching passages with sources.",
    input_schema=KbSearchInput.model_json_schema(),
)

_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Passage:
    """A searchable piece of a corpus file. `indexed` (section headings included) is what
    BM25 sees; `text` (headings dropped, the title is in the source) is what a hit shows."""

    source: Source
    text: str
    indexed: str


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        match = _HEADING.match(line.strip())
        if match:
            return match.group("title")
    return fallback


def _cut(paragraph: str) -> list[str]:
    """Split an oversized paragraph (a long table or code block) at line boundaries."""
    if len(paragraph) <= MAX_CHARS:
        return [paragraph]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in paragraph.splitlines():
        if current and size + len(line) + 1 > MAX_CHARS:
            pieces.append("\n".join(current))
            current, size = [], 0
        current.append(line[:MAX_CHARS])
        size += len(line) + 1
    if current:
        pieces.append("\n".join(current))
    return pieces


def split_passages(text: str) -> list[str]:
    """Group paragraphs into passages of one to three (more if they are tiny), about
    `TARGET_CHARS` long.

    A heading always starts a new passage, so a passage never straddles two sections and
    carries its section's title as its first line.
    """
    paragraphs = [p.strip("\n") for p in _BLANK_LINES.split(text) if p.strip()]
    passages: list[str] = []
    current: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal current, size
        if current and not all(_HEADING.match(p) for p in current):
            passages.append("\n\n".join(current))
        current, size = [], 0

    for paragraph in paragraphs:
        if _HEADING.match(paragraph):
            flush()
        for piece in _cut(paragraph):
            full = size + len(piece) > TARGET_CHARS or (
                len(current) >= MAX_PARAGRAPHS and size >= MIN_CHARS
            )
            # A lone heading is glued to what follows instead of being flushed on its own.
            if current and full and not (len(current) == 1 and _HEADING.match(current[0])):
                flush()
            current.append(piece)
            size += len(piece)
    flush()
    return passages


def load_passages(corpus_dir: Path) -> list[Passage]:
    """Every passage of every `*.md`/`*.txt` file under `corpus_dir`, in a stable order.

    A passage repeated word for word in several files (the Python help topics repeat whole
    sections) is kept once, in the most specific file: the one with the fewest passages.
    """
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    files: list[tuple[str, str, list[tuple[int, str, str]]]] = []
    stems: dict[str, Path] = {}
    for path in sorted(corpus_dir.rglob("*")):
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        if path.stem in stems:
            # Ids are `kb:<stem>#<n>`; two files with one stem would share ids.
            raise ValueError(f"corpus files {stems[path.stem]} and {path} share a stem")
        stems[path.stem] = path
        text = path.read_text(encoding="utf-8", errors="replace")
        # Numbered by position in the file, so an id does not move when other files change.
        numbered = enumerate(split_passages(text), start=1)
        files.append((path.stem, _title(text, path.stem), [(n, c, _body(c)) for n, c in numbered]))

    owner: dict[str, tuple[int, str]] = {}
    for stem, _, items in files:
        for _, _, body in items:
            claim = (len(items), stem)
            owner[_key(body)] = min(owner.get(_key(body), claim), claim)
    passages: list[Passage] = []
    emitted: set[str] = set()
    for stem, title, items in files:
        for n, chunk, body in items:
            key = _key(body)
            if owner[key][1] != stem or key in emitted:
                continue
            emitted.add(key)
            source = Source(id=f"kb:{stem}#{n}", title=title, url=None)
            passages.append(Passage(source=source, text=body, indexed=chunk))
    return passages


def _body(chunk: str) -> str:
    return "\n\n".join(p for p in chunk.split("\n\n") if not _HEADING.match(p))


def _key(body: str) -> str:
    return " ".join(body.split())


class KnowledgeBase:
    """A BM25 index over the corpus passages. Build with `load()`; searching never mutates."""

    def __init__(self, passages: list[Passage]) -> None:
        if not passages:
            raise ValueError("the knowledge base has no passages")
        self.passages = passages
        self._tokenizer = Tokenizer(stopwords=STOPWORDS)
        ids = self._tokenizer.tokenize(
            [p.indexed for p in passages], update_vocab=True, return_as="ids", show_progress=False
        )
        self._index = bm25s.BM25()
        self._index.index((ids, self._tokenizer.get_vocab_dict()), show_progress=False)

    @classmethod
    def load(cls, corpus_dir: Path) -> KnowledgeBase:
        return cls(load_passages(corpus_dir))

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 5) -> list[tuple[Passage, float]]:
        """The `k` best passages for `query` with their BM25 scores; none if nothing matches."""
        # Words the corpus never uses drop out here rather than growing the vocabulary.
        tokens = self._tokenizer.tokenize(
            [query], update_vocab=False, return_as="ids", show_progress=False
        )
        if not any(tokens[0]):
            return []
        k = max(1, min(k, len(self.passages)))
        indices, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        return [
            (self.passages[int(i)], float(s))
            for i, s in zip(indices[0], scores[0], strict=True)
            if s > 0
        ]


def hits_json(hits: list[tuple[Passage, float]]) -> str:
    """The tool result the model reads: the hits, each with its source and text."""
    payload: dict[str, Any] = {
        "hits": [
            {"source": p.source.model_dump(), "text": p.text, "score": round(score, 4)}
            for p, score in hits
        ]
    }
    return json.dumps(payload, ensure_ascii=False)


def kb_search_tool(kb: KnowledgeBase) -> Tool:
    """`kb_search` as the loop sees it: validated input, JSON hits out."""

    async def run(arguments: dict[str, Any]) -> ToolOutput:
        query = parse_input(KbSearchInput, "kb_search", arguments)
        # Inline, not in a thread: over the shipped corpus (~600 passages) a search takes
        # ~0.03 ms (0.1 ms at worst), a fraction of what a hop to a worker thread and back
        # costs, and the event loop is never held up for long. A corpus a hundred times
        # larger would warrant `asyncio.to_thread` again.
        hits = kb.search(query.query, query.k)
        return ToolOutput(content=hits_json(hits), sources=[p.source for p, _ in hits])

    return Tool(spec=KB_SEARCH_SPEC, run=run)
