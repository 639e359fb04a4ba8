"""kb_search: relevance and source ids on the shipped Python documentation, the tool's JSON,
the cache key that follows the index version, and re-indexing a changed source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from podcrew_core.contracts.errors import ToolError
from podcrew_kb.chunk import MAX_CHARS
from podcrew_kb.embed import Embedder
from podcrew_research.settings import DEFAULT_CORPUS_DIR, ResearchSettings
from podcrew_research.tools import Tool, ToolOutput
from podcrew_research.tools.kb_search import (
    INDEX_VERSION_ARGUMENT,
    KnowledgeBase,
    kb_search_tool,
    versioned,
)


def test_generators_yield_finds_the_yield_section(kb: KnowledgeBase) -> None:
    hits = kb.search("generators yield", 5)

    # The section, in one of its chunks (`~2` is its second).
    assert hits[0].chunk.id.split("~")[0] == "python-docs/yield.md#the-yield-statement"
    assert hits[0].chunk.title == 'The "yield" statement'
    assert "generator" in " ".join(h.chunk.text for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] > 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("list comprehension display", "python-docs/lists.md#list-displays"),
        ("format string syntax replacement field", "python-docs/formatstrings.md#"),
        ("try except finally clause", "python-docs/try.md#"),
        ("with statement context manager __enter__", "python-docs/with.md#the-with-statement"),
    ],
)
def test_python_questions_find_their_section(kb: KnowledgeBase, query: str, expected: str) -> None:
    ids = [h.chunk.id for h in kb.search(query, 5)]
    assert any(i.startswith(expected) for i in ids), ids


def test_query_of_unknown_words_or_stopwords_finds_nothing(kb: KnowledgeBase) -> None:
    assert kb.search("zzyzx qwertyuiop", 5) == []
    assert kb.search("the of a", 5) == []


def test_shipped_corpus_chunks_are_bounded_with_unique_ids(kb: KnowledgeBase) -> None:
    chunks = kb.live.current.chunks
    assert len(chunks) > 300
    assert max(len(c.text) for c in chunks) <= MAX_CHARS
    ids = [c.id for c in chunks]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("python-docs/") and ".md" in i for i in ids)


def test_corpus_setting_still_names_the_sources_and_kb_sources_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PODCREW_RESEARCH_CORPUS_DIR", str(tmp_path))
    assert ResearchSettings().knowledge_sources() == [str(tmp_path)]
    monkeypatch.setenv("PODCREW_RESEARCH_KB_SOURCES", f"/docs/a, team=/docs/b,{tmp_path}")
    assert ResearchSettings().knowledge_sources() == ["/docs/a", "team=/docs/b", str(tmp_path)]
    monkeypatch.setenv("PODCREW_RESEARCH_KB_SOURCES", '["/docs/a", "team=/docs/b,c"]')
    assert ResearchSettings().knowledge_sources() == ["/docs/a", "team=/docs/b,c"]
    monkeypatch.delenv("PODCREW_RESEARCH_CORPUS_DIR")
    monkeypatch.delenv("PODCREW_RESEARCH_KB_SOURCES")
    assert ResearchSettings().knowledge_sources() == [str(DEFAULT_CORPUS_DIR)]


async def test_tool_returns_hits_with_citable_sources_and_validates_input(
    kb: KnowledgeBase,
) -> None:
    tool = kb_search_tool(kb)
    output = await tool.run({"query": "generators yield", "k": 2})

    hits = json.loads(output.content)["hits"]
    assert len(hits) == 2 == len(output.sources)
    assert hits[0]["source"] == output.sources[0].model_dump()
    assert output.sources[0].id.split("~")[0] == "kb:python-docs/yield.md#the-yield-statement"
    assert output.sources[0].url is None
    assert isinstance(hits[0]["score"], float)
    with pytest.raises(ToolError, match="invalid kb_search input"):
        await tool.run({"query": "x", "k": 99})


async def test_the_index_version_travels_with_the_arguments(kb: KnowledgeBase) -> None:
    seen: list[dict[str, object]] = []

    async def record(arguments: dict[str, object]) -> ToolOutput:
        seen.append(arguments)
        return ToolOutput(content="{}")

    tool = versioned(Tool(spec=kb_search_tool(kb).spec, run=record), kb)
    await tool.run({"query": "yield"})
    assert seen == [{"query": "yield", INDEX_VERSION_ARGUMENT: kb.version}]


def _skipped_total() -> float:
    return REGISTRY.get_sample_value("podcrew_kb_files_skipped_total") or 0.0


async def test_a_changed_source_is_searched_after_refresh_and_bad_files_are_counted(
    tmp_path: Path, embedder: Embedder
) -> None:
    (tmp_path / "guide.md").write_text("# Guide\n\nThe frobnicator needs a license key.\n")
    kb = KnowledgeBase.load(tmp_path, embedder=embedder)
    old_version = kb.version
    tool = kb_search_tool(kb)
    assert kb.refresh() is None  # nothing changed

    skipped_before = _skipped_total()
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a PDF")
    (tmp_path / "ops.md").write_text("# Operations\n\n## Backups\n\nQuuxbackups run nightly.\n")
    report = kb.refresh()

    assert report is not None
    assert [s.path for s in report.skipped] == ["broken.pdf"]
    assert _skipped_total() == skipped_before + 1
    assert kb.version != old_version
    output = await tool.run({"query": "when do quuxbackups run"})
    assert output.sources[0].id == "kb:ops.md#backups"
    assert output.sources[0].title == "Operations > Backups"
