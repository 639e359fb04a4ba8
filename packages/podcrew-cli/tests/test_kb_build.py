"""`podcrew kb build`: a directory of documents to an index a research agent loads; the
`--kb` option of `up` and `demo` hands the directory to the research agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podcrew_cli.__main__ import _config, build_parser, main
from podcrew_kb.embed import load_embedder
from podcrew_kb.store import FORMAT_VERSION, load_index


def test_kb_build_writes_an_index_the_agent_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "install.md").write_text(
        "# Install\n\n## Requirements\n\nA zorblax of version 3 or later.\n", encoding="utf-8"
    )
    (docs / "faq.html").write_text("<h1>FAQ</h1><p>Ask the quibbler.</p>", encoding="utf-8")
    (docs / "bad.pdf").write_bytes(b"%PDF-1.4 truncated")

    with pytest.raises(SystemExit) as exit_info:
        main(["kb", "build", str(docs), "-o", str(tmp_path / "index")])

    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skipped bad.pdf" in out
    assert "indexed 2 of 3 files into 2 chunks" in out
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    index = load_index(tmp_path / "index", load_embedder())
    assert index.search("which zorblax version is required", 1)[0].chunk.id == (
        "guide/install.md#requirements"
    )
    assert sorted(c.id for c in index.chunks) == ["faq.html#faq", "guide/install.md#requirements"]


def test_kb_build_of_a_missing_or_empty_directory_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for source in (tmp_path / "missing", tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            main(["kb", "build", str(source), "-o", str(tmp_path / "index")])
        assert exit_info.value.code == 1
    out = " ".join(capsys.readouterr().out.split())  # as read, whatever the terminal's width
    assert "is not a directory" in out and "nothing to index" in out
    assert not (tmp_path / "index").exists()


def test_kb_option_points_the_research_agent_at_the_directories(tmp_path: Path) -> None:
    parser_args = build_parser().parse_args(["up", "--kb", str(tmp_path), "--kb", "rel"])
    config = _config(parser_args)
    assert config.env["PODCREW_RESEARCH_KB_SOURCES"] == f"{tmp_path},{Path('rel').resolve()}"
    assert "PODCREW_RESEARCH_KB_SOURCES" not in _config(build_parser().parse_args(["up"])).env
