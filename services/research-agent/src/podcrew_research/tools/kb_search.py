"""`kb_search`: hybrid search (BM25 and dense vectors, `podcrew_kb`) over the knowledge
sources the installation points at, kept current while the agent runs.

A hit's source id is `kb:` and the chunk's id, the file's path and the anchor of its
section (`kb:guide/install.md#requirements`), titled by the document and section: the
citation in a report tells the reader which file to open and where. Other tools' sources
keep their own prefixes (a fetched page is its URL), so ids never collide.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, Field

from podcrew_core.contracts.schemas import Source
from podcrew_core.llm.types import ToolSpec
from podcrew_kb.embed import Embedder, load_embedder
from podcrew_kb.index import Hit
from podcrew_kb.sources import BuildReport, LiveIndex, SourceSpec
from podcrew_research.tools import Tool, ToolOutput, parse_input

log = structlog.get_logger(__name__)

KB_SEARCH_TOOL = "kb_search"
SOURCE_PREFIX = "kb:"
# Up to this many chunks a search (well under a millisecond) runs on the event loop; past it
# (a few milliseconds at 50k chunks) it moves to a thread, so the loop keeps serving others.
INLINE_MAX_CHUNKS = 5000
# The index version is part of what a result depends on, so it is part of the tool cache's
# key: after a re-index, cached hits of the old corpus are never served again.
INDEX_VERSION_ARGUMENT = "index_version"

KB_CHUNKS = Gauge(
    "podcrew_kb_chunks",
    "Chunks in the knowledge-base index being searched.",
    multiprocess_mode="livemax",
)
KB_FILES_SKIPPED = Counter(
    "podcrew_kb_files_skipped",
    "Knowledge-source files (or duplicate chunk ids) left out of an index build because they "
    "could not be parsed.",
)
KB_BUILDS = Counter(
    "podcrew_kb_builds",
    "Knowledge-base index builds by outcome (built, unchanged, error).",
    ["outcome"],
)
KB_BUILD_DURATION = Histogram(
    "podcrew_kb_build_duration_seconds",
    "Time to (re)build the knowledge-base index from its sources.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


class KbSearchInput(BaseModel):
    """What the model asks `kb_search` for."""

    query: str = Field(min_length=1, max_length=500, description="What to look for.")
    k: int = Field(default=5, ge=1, le=10, description="How many passages to return.")


KB_SEARCH_SPEC = ToolSpec(
    name=KB_SEARCH_TOOL,
    description="Search the knowledge base; returns the best-matching passages with sources.",
    input_schema=KbSearchInput.model_json_schema(),
)


def source_of(hit: Hit) -> Source:
    """The citable source of a hit."""
    return Source(id=f"{SOURCE_PREFIX}{hit.chunk.id}", title=hit.chunk.title, url=None)


class KnowledgeBase:
    """The searchable knowledge sources: the current index, and `refresh` to rebuild it when
    the sources changed. Searches take the index of the moment and finish on it."""

    def __init__(self, live: LiveIndex) -> None:
        self.live = live

    @classmethod
    def load(
        cls, *sources: Path | str | SourceSpec, embedder: Embedder | None = None
    ) -> KnowledgeBase:
        """Build the index over `sources` now (each a directory of documents or of a built
        index, or a `SourceSpec`)."""
        specs = [s if isinstance(s, SourceSpec) else SourceSpec.parse(str(s)) for s in sources]
        kb = cls(LiveIndex(specs, embedder or load_embedder()))
        report = kb.refresh()
        assert report is not None
        return kb

    def refresh(self) -> BuildReport | None:
        """Rebuild if the sources changed (blocking: call it from a thread); its report, or
        `None` if nothing changed. A failed build raises and keeps the current index."""
        started = time.perf_counter()
        try:
            report = self.live.refresh()
        except Exception:
            KB_BUILDS.labels("error").inc()
            raise
        if report is None:
            KB_BUILDS.labels("unchanged").inc()
            return None
        KB_BUILDS.labels("built").inc()
        KB_BUILD_DURATION.observe(time.perf_counter() - started)
        KB_FILES_SKIPPED.inc(len(report.skipped))
        KB_CHUNKS.set(len(self.live.current))
        for skipped in report.skipped:
            log.warning("kb_file_skipped", path=skipped.path, reason=skipped.reason)
        log.info(
            "kb_indexed", files=report.files, chunks=report.chunks, skipped=len(report.skipped)
        )
        return report

    @property
    def version(self) -> str:
        """The digest of the corpus the current index was built from."""
        return self.live.current.digest

    def __len__(self) -> int:
        return len(self.live.current)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """The `k` best chunks for `query`; none if nothing relevant is found."""
        return self.live.current.search(query, k)


async def keep_current(kb: KnowledgeBase, interval_s: float) -> None:
    """Re-index whenever the sources change, checking every `interval_s`, until cancelled.
    A failed re-index is logged and counted; the agent keeps searching the last good one."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(kb.refresh)
        except Exception:  # a broken source must not end re-indexing for good
            log.exception("kb_refresh_failed")


def hits_json(hits: Sequence[Hit], sources: Sequence[Source] | None = None) -> str:
    """The tool result the model reads: the hits, each with its source (`sources`, when the
    caller has them already) and text."""
    sources = sources if sources is not None else [source_of(h) for h in hits]
    payload: dict[str, Any] = {
        "hits": [
            {"source": source.model_dump(), "text": h.chunk.text, "score": round(h.score, 4)}
            for h, source in zip(hits, sources, strict=True)
        ]
    }
    return json.dumps(payload, ensure_ascii=False)


def kb_search_tool(kb: KnowledgeBase) -> Tool:
    """`kb_search` as the loop sees it: validated input, JSON hits out."""

    async def run(arguments: dict[str, Any]) -> ToolOutput:
        query = parse_input(KbSearchInput, KB_SEARCH_TOOL, arguments)
        index = kb.live.current
        if len(index) <= INLINE_MAX_CHUNKS:
            hits = index.search(query.query, query.k)
        else:
            hits = await asyncio.to_thread(index.search, query.query, query.k)
        sources = [source_of(h) for h in hits]
        return ToolOutput(content=hits_json(hits, sources), sources=sources)

    return Tool(spec=KB_SEARCH_SPEC, run=run)


def versioned(tool: Tool, kb: KnowledgeBase) -> Tool:
    """`tool` (a cached `kb_search`) called with the index version among its arguments, so
    a cache in front of it keys results by the corpus they came from."""

    async def run(arguments: dict[str, Any]) -> ToolOutput:
        return await tool.run({**arguments, INDEX_VERSION_ARGUMENT: kb.version})

    return Tool(spec=tool.spec, run=run)
