"""Hybrid search and reciprocal rank fusion, the index on disk, the embedding model that ships
inside the wordllama wheel, and sources kept current (a ConfigMap's symlink swap included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from podcrew_kb.chunk import Chunk
from podcrew_kb.embed import MODEL_ID, Embedder, package_dir
from podcrew_kb.index import Index, rrf
from podcrew_kb.sources import LiveIndex, SourceSpec, build_index, fingerprint
from podcrew_kb.store import FORMAT_VERSION, IndexFormatError, load_index, save_index

CHUNKS = [
    Chunk("pets.md#cats", "Pets > Cats", "Cats sleep most of the day and purr when content."),
    Chunk("pets.md#dogs", "Pets > Dogs", "Dogs need a walk twice a day."),
    Chunk("cars.md#engines", "Cars > Engines", "A diesel engine ignites fuel by compression."),
    Chunk("cars.md#brakes", "Cars > Brakes", "Disc brakes stop a car by friction on a rotor."),
]


@pytest.fixture
def index(embedder: Embedder) -> Index:
    return Index.build(CHUNKS, embedder, digest="d1")


def test_rrf_rewards_agreement_and_keeps_first_seen_order_on_ties() -> None:
    fused = rrf([[1, 2, 3], [3, 1]], k=60)
    assert [item for item, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2][1] == pytest.approx(1 / 62)
    assert [item for item, _ in rrf([[7], [8]])] == [7, 8]
    assert rrf([]) == []


def test_search_finds_by_words_and_by_meaning(index: Index) -> None:
    assert index.search("diesel compression", 1)[0].chunk.id == "cars.md#engines"
    # No word in common with the chunk: only the dense retriever can find it.
    assert index.bm25_ranking("puppy exercise") == []
    assert index.search("puppy exercise", 1)[0].chunk.id == "pets.md#dogs"
    assert index.search("the of a", 3) == []


def test_index_round_trips_through_disk(index: Index, embedder: Embedder, tmp_path: Path) -> None:
    save_index(index, tmp_path / "idx", extra={"files": 2})
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["embedding_model"] == MODEL_ID == "wordllama/l2_supercat_256"
    assert manifest["chunks"] == 4 and manifest["corpus_digest"] == "d1"
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "bm25",
        "chunks.jsonl",
        "manifest.json",
        "vectors.npy",
    ]

    loaded = load_index(tmp_path / "idx", embedder)

    assert loaded.chunks == index.chunks
    assert np.array_equal(loaded.vectors, index.vectors)
    for query in ("diesel compression", "puppy exercise", "walk"):
        assert loaded.search(query, 4) == index.search(query, 4)
    save_index(loaded, tmp_path / "idx")  # replaces in place
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_another_format_version_or_model_is_refused(
    index: Index, embedder: Embedder, tmp_path: Path
) -> None:
    save_index(index, tmp_path / "idx")
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(IndexFormatError, match="rebuild it with `podcrew kb build`"):
        load_index(tmp_path / "idx", embedder)
    manifest_path.write_text(json.dumps({**manifest, "embedding_model": "other/model"}))
    with pytest.raises(IndexFormatError, match="built with other/model"):
        load_index(tmp_path / "idx", embedder)
    manifest_path.write_text(json.dumps({**manifest, "chunks": 5}))
    with pytest.raises(IndexFormatError, match="disagree"):
        load_index(tmp_path / "idx", embedder)
    with pytest.raises(IndexFormatError, match="no readable manifest"):
        load_index(tmp_path, embedder)


def test_the_model_loads_from_the_wheel_with_the_network_and_caches_out_of_reach(
    tmp_path: Path,
) -> None:
    # A fresh HOME (no cache), Hugging Face offline, and a proxy that refuses everything:
    # a download attempt would fail, so loading proves none is made.
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    script = (
        "from podcrew_kb.embed import load_embedder\n"
        "e = load_embedder()\n"
        "print(e.weights_path)\n"
        "print(e.embed(['hello world']).shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    weights, shape = result.stdout.split("\n")[:2]
    assert Path(weights).is_relative_to(package_dir())
    assert Path(weights).stat().st_size > 10_000_000
    assert shape == "(1, 256)"
    assert not any(tmp_path.rglob("*"))  # nothing cached, nothing written


def test_named_sources_prefix_ids_and_duplicate_ids_are_skipped(
    embedder: Embedder, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "faq.md").write_text(f"# FAQ\n\nAnswers from {name}.\n")
    specs = [SourceSpec.parse(f"{tmp_path / 'a'}"), SourceSpec.parse(f"team={tmp_path / 'b'}")]
    index, report = build_index([*specs, SourceSpec(tmp_path / "a")], embedder)

    assert [c.id for c in index.chunks] == ["faq.md#faq", "team/faq.md#faq"]
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("faq.md#faq", "another source has a chunk of this id")
    ]


def test_a_built_index_is_a_source_alone_or_beside_documents(
    index: Index, embedder: Embedder, tmp_path: Path
) -> None:
    save_index(index, tmp_path / "idx")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "boats.md").write_text("# Boats\n\nA keel keeps a sailboat upright.\n")

    alone, _ = build_index([SourceSpec(tmp_path / "idx")], embedder)
    both, _ = build_index([SourceSpec(tmp_path / "idx"), SourceSpec(tmp_path / "docs")], embedder)

    assert alone.digest == "d1" and len(alone) == 4
    assert [c.id for c in both.chunks] == [*(c.id for c in CHUNKS), "boats.md#boats"]
    assert both.search("sailboat keel", 1)[0].chunk.id == "boats.md#boats"
    with pytest.raises(FileNotFoundError):
        build_index([SourceSpec(tmp_path / "missing")], embedder)


def _configmap(root: Path, version: str, files: dict[str, str]) -> None:
    """Lay `files` out as the kubelet mounts a ConfigMap: the data in a hidden timestamped
    directory, `..data` a link to it, each visible name a link through `..data`; a new
    version is a new directory and `..data` re-pointed in one rename."""
    data = root / f"..{version}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text, encoding="utf-8")
    staging = root / "..data_tmp"
    staging.symlink_to(data.name)
    staging.rename(root / "..data")  # atomic replace of the old link
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_configmap_update_by_symlink_swap_is_reindexed(embedder: Embedder, tmp_path: Path) -> None:
    _configmap(tmp_path, "2026_01_01_v1", {"runbook.md": "# Runbook\n\nRestart the zorblax.\n"})
    live = LiveIndex([SourceSpec(tmp_path)], embedder)
    assert live.refresh() is not None
    first = live.current
    assert [c.id for c in first.chunks] == ["runbook.md#runbook"]
    assert live.refresh() is None

    before = fingerprint(live.specs)
    _configmap(tmp_path, "2026_01_02_v2", {"runbook.md": "# Runbook\n\nDrain the quibbler.\n"})
    assert fingerprint(live.specs) != before
    report = live.refresh()

    assert report is not None and report.files == 1  # hidden `..` entries are not walked twice
    assert live.current is not first
    assert live.current.search("quibbler", 1)[0].chunk.text == "Drain the quibbler."
    # A search that took the old index before the swap still answers from it.
    assert first.search("zorblax", 1)[0].chunk.text == "Restart the zorblax."


def test_a_failed_rebuild_keeps_the_last_good_index(embedder: Embedder, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nalpha text\n")
    live = LiveIndex([SourceSpec(tmp_path)], embedder)
    live.refresh()
    good = live.current
    (tmp_path / "a.md").unlink()
    with pytest.raises(ValueError, match="no readable documents"):
        live.refresh()
    assert live.current is good


def test_a_rebuild_embeds_only_new_text(embedder: Embedder, index: Index) -> None:
    calls: list[int] = []

    class Counting(Embedder):
        def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:  # type: ignore[type-arg]
            calls.append(len(texts))
            return super().embed(texts, batch_size)

    counting = Counting(model=embedder.model, weights_path=embedder.weights_path)
    extra = Chunk("new.md", "New", "A brand new note.")
    rebuilt = Index.build([*CHUNKS, extra], counting, digest="d2", reuse=[index])

    assert calls == [1]
    assert np.array_equal(rebuilt.vectors[:4], index.vectors)
