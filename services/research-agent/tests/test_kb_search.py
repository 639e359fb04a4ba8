"""kb_search: passages, ids, relevance on the shipped Python documentation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from podcrew_core.contracts.errors import ToolError
from podcrew_research.settings import DEFAULT_CORPUS_DIR
from podcrew_research.tools.kb_search import (
    MAX_CHARS,
    KnowledgeBase,
    kb_search_tool,
    load_passages,
    split_passages,
)


def test_generators_yield_finds_the_yield_topic(kb: KnowledgeBase) -> None:
    hits = kb.search("generators yield", 5)

    assert hits[0][0].source.id.startswith("kb:yield#")
    assert hits[0][0].source.title == 'The "yield" statement'
    assert "generator" in " ".join(p.text for p, _ in hits)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[-1] > 0


@pytest.mark.parametrize(
    ("query", "topic"),
    [
        ("list comprehension display", "lists"),
        ("format string syntax replacement field", "formatstrings"),
        ("try except finally clause", "try"),
        ("with statement context manager __enter__", "with"),
    ],
)
def test_python_questions_find_their_topic(kb: KnowledgeBase, query: str, topic: str) -> None:
    ids = [p.source.id for p, _ in kb.search(query, 5)]
    assert any(i.startswith(f"kb:{topic}#") for i in ids), ids


def test_query_of_unknown_words_or_stopwords_finds_nothing(kb: KnowledgeBase) -> None:
    assert kb.search("zzyzx qwertyuiop", 5) == []
    assert kb.search("the of a", 5) == []


def test_index_builds_fast_with_passages_of_sane_size() -> None:
    started = time.perf_counter()
    kb = KnowledgeBase.load(DEFAULT_CORPUS_DIR)
    assert time.perf_counter() - started < 3.0
    assert len(kb) > 300
    assert max(len(p.text) for p in kb.passages) <= MAX_CHARS
    ids = [p.source.id for p in kb.passages]
    assert len(ids) == len(set(ids))


def test_passages_keep_headings_with_their_text_and_number_from_one(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text(
        "# Notes\n\nFirst paragraph.\n\n## Part two\n\nSecond part text.\n", encoding="utf-8"
    )
    (tmp_path / "plain.txt").write_text("No heading here.\n", encoding="utf-8")
    (tmp_path / "ignored.json").write_text("{}", encoding="utf-8")

    passages = load_passages(tmp_path)

    assert [(p.source.id, p.source.title, p.text, p.indexed) for p in passages] == [
        ("kb:notes#1", "Notes", "First paragraph.", "# Notes\n\nFirst paragraph."),
        ("kb:notes#2", "Notes", "Second part text.", "## Part two\n\nSecond part text."),
        ("kb:plain#1", "plain", "No heading here.", "No heading here."),
    ]


def test_repeated_passages_are_kept_once_in_the_most_specific_file(tmp_path: Path) -> None:
    shared = "A context manager defines the runtime context of a with statement."
    (tmp_path / "all.md").write_text(f"# All\n\n{shared}\n\n## Other\n\n" + "x " * 900)
    (tmp_path / "with.md").write_text(f"# With\n\n{shared}\n")

    passages = load_passages(tmp_path)

    assert [p.source.id for p in passages if p.text == shared] == ["kb:with#1"]
    assert [p.source.id for p in passages] == ["kb:all#2", "kb:with#1"]


def test_long_sections_split_into_passages_of_at_most_three_long_paragraphs() -> None:
    paragraph = "word " * 100
    passages = split_passages("\n\n".join([paragraph] * 7))
    assert len(passages) >= 3
    assert all(p.count("\n\n") <= 2 for p in passages)


def test_duplicate_stems_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.md").write_text("text", encoding="utf-8")
    (tmp_path / "x.txt").write_text("text", encoding="utf-8")
    with pytest.raises(ValueError, match="share a stem"):
        load_passages(tmp_path)


async def test_tool_returns_hits_json_and_validates_input(kb: KnowledgeBase) -> None:
    tool = kb_search_tool(kb)
    output = await tool.run({"query": "generators yield", "k": 2})

    hits = json.loads(output.content)["hits"]
    assert len(hits) == 2 == len(output.sources)
    assert hits[0]["source"] == output.sources[0].model_dump()
    assert isinstance(hits[0]["score"], float)
    with pytest.raises(ToolError, match="invalid kb_search input"):
        await tool.run({"query": "x", "k": 99})
