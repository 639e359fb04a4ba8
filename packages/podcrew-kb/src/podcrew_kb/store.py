"""The on-disk index: a directory that `podcrew kb build` writes and research agents load.

```
INDEX/
  manifest.json        format name and version, embedding model, corpus digest, counts
  chunks.jsonl         one chunk a line: id, title, text (line n is row n of the vectors)
  vectors.npy          float32, chunks x 256, unit rows (numpy's format, no pickle)
  bm25/                bm25s's own files (scores as .npy, vocabulary and parameters as JSON)
```

Only JSON and `.npy` are read, with `allow_pickle=False`: loading an index never runs code
from it. A reader refuses another format version or another embedding model (the vectors
would mean nothing to its queries) with `IndexFormatError`. The directory is written beside
its destination and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from podcrew_kb.chunk import Chunk
from podcrew_kb.embed import Embedder
from podcrew_kb.index import STOPWORDS, Index, new_tokenizer

FORMAT = "podcrew-kb-index"
FORMAT_VERSION = 2  # 2: BM25 terms are Snowball stems
MANIFEST = "manifest.json"
_CHUNKS = "chunks.jsonl"
_VECTORS = "vectors.npy"
_BM25 = "bm25"


class IndexFormatError(Exception):
    """A directory that is not an index this version can read."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What `manifest.json` says about an index that loading it checks."""

    embedding_model: str
    corpus_digest: str
    chunks: int


def is_index(path: Path) -> bool:
    """Whether `path` is a directory holding a built index (of any version)."""
    return (path / MANIFEST).is_file()


def read_manifest(path: Path) -> Manifest:
    """The manifest of the index at `path`; `IndexFormatError` if it is not one this version
    reads."""
    try:
        raw = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: no readable {MANIFEST}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not a {FORMAT} directory")
    if raw.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: format version {raw.get('format_version')!r}, this podcrew reads "
            f"{FORMAT_VERSION}; rebuild it with `podcrew kb build`"
        )
    return Manifest(
        embedding_model=str(raw["embedding_model"]),
        corpus_digest=str(raw["corpus_digest"]),
        chunks=int(raw["chunks"]),
    )


def save_index(index: Index, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write `index` to the directory `path`, replacing what is there in one rename."""
    if not index.chunks:
        raise ValueError("an index with no chunks is not worth writing")
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with (staging / _CHUNKS).open("w", encoding="utf-8") as out:
        for chunk in index.chunks:
            row = {"id": chunk.id, "title": chunk.title, "text": chunk.text}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    np.save(staging / _VECTORS, index.vectors, allow_pickle=False)
    index.bm25.save(str(staging / _BM25), show_progress=False)
    index.tokenizer.save_vocab(str(staging / _BM25))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embedding_model": index.embedder.model_id,
        "embedding_dim": index.embedder.dim,
        "corpus_digest": index.digest,
        "chunks": len(index.chunks),
        "built_at": time.time(),
        "bm25": {"tokenizer": "bm25s", "stopwords": len(STOPWORDS), "stemmer": "snowball-english"},
        "extra": extra or {},
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _swap_in(staging, path)


def _swap_in(staging: Path, path: Path) -> None:
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    staging.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def load_index(path: Path, embedder: Embedder) -> Index:
    """The index at `path`, searched with `embedder`; `IndexFormatError` if it was built for
    another format version or model, or its parts disagree."""
    manifest = read_manifest(path)
    if manifest.embedding_model != embedder.model_id:
        raise IndexFormatError(
            f"{path}: built with {manifest.embedding_model}, this podcrew embeds with "
            f"{embedder.model_id}; rebuild it"
        )
    try:
        with (path / _CHUNKS).open(encoding="utf-8") as lines:
            chunks = [Chunk(**json.loads(line)) for line in lines if line.strip()]
        vectors = np.load(path / _VECTORS, allow_pickle=False)
        bm25 = bm25s.BM25.load(str(path / _BM25), allow_pickle=False, show_progress=False)
        tokenizer = new_tokenizer()
        tokenizer.load_vocab(str(path / _BM25))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IndexFormatError(f"{path}: unreadable index: {exc}") from exc
    if len(chunks) != manifest.chunks or vectors.shape != (manifest.chunks, embedder.dim):
        raise IndexFormatError(f"{path}: manifest, chunks and vectors disagree")
    return Index(
        chunks,
        vectors.astype(np.float32, copy=False),
        bm25=bm25,
        tokenizer=tokenizer,
        embedder=embedder,
        digest=manifest.corpus_digest,
    )
