"""Knowledge sources: the directories (of documents, or of a built index) an installation
points at, read into one index, and kept current while the agent runs.

A source is written `PATH` or `NAME=PATH`; a name, when given, starts the ids of its chunks
(`team/guide/install.md#requirements`), so two sources holding the same file names stay
apart. A chunk whose id another source already gave is skipped, as is a file that does not
parse: each lands in the `BuildReport`, none stops the build.

Files are found by walking each directory, following symbolic links and skipping names that
start with a dot. That is exactly what a Kubernetes ConfigMap volume needs: its visible
files are links into `..data`, itself a link that the kubelet re-points, in one rename, at a
new hidden directory when the ConfigMap changes. `LiveIndex` notices by polling a cheap
fingerprint (each file's resolved path, size and modification time) rather than by file
events, which neither network volumes nor that rename reliably deliver.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from podcrew_kb.chunk import Chunk, chunk_document, drop_repeats
from podcrew_kb.embed import Embedder
from podcrew_kb.index import Index
from podcrew_kb.parse import SUFFIXES, ParseError, parse_bytes, read_file
from podcrew_kb.store import MANIFEST, IndexFormatError, is_index, load_index


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One configured source: a directory, and the name its chunk ids start with (if any)."""

    path: Path
    name: str = ""

    @classmethod
    def parse(cls, entry: str) -> SourceSpec:
        """`PATH` or `NAME=PATH`."""
        name, sep, path = entry.strip().partition("=")
        if not sep:
            name, path = "", name
        name = name.strip().strip("/")
        if not path.strip():
            raise ValueError(f"knowledge source {entry!r} names no directory")
        return cls(path=Path(path.strip()).expanduser(), name=name)

    def id_of(self, relative: str) -> str:
        return f"{self.name}/{relative}" if self.name else relative


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file (or a chunk id) left out of the index, and why."""

    path: str
    reason: str


@dataclass(slots=True)
class BuildReport:
    """What a build read and left out."""

    files: int = 0
    chunks: int = 0
    seconds: float = 0.0
    skipped: list[Skipped] = field(default_factory=list)


def walk(root: Path) -> Iterator[tuple[str, Path]]:
    """The documents under `root` (relative POSIX path, path), sorted, links followed,
    hidden names skipped, each directory visited once however many links lead to it."""
    seen: set[str] = set()
    for directory, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory, name)
            if not name.startswith(".") and path.suffix.lower() in SUFFIXES:
                yield path.relative_to(root).as_posix(), path


def fingerprint(specs: Sequence[SourceSpec]) -> str:
    """Changes whenever a file of the sources is added, removed, replaced or edited (from
    names, resolved paths, sizes and modification times: no file is read)."""
    digest = hashlib.sha256()
    for spec in specs:
        paths = [(MANIFEST, spec.path / MANIFEST)] if is_index(spec.path) else walk(spec.path)
        digest.update(f"{spec.name}\0{spec.path}\n".encode())
        for relative, path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(
                f"{relative}\0{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _read_source(spec: SourceSpec, report: BuildReport) -> tuple[list[list[Chunk]], str]:
    """The chunks of each document under `spec.path`, and the digest of their contents."""
    if not spec.path.is_dir():
        raise FileNotFoundError(f"knowledge source {spec.path} is not a directory")
    files: list[list[Chunk]] = []
    digest = hashlib.sha256()
    for relative, path in walk(spec.path):
        report.files += 1
        try:
            data = read_file(path)
            document = parse_bytes(path.suffix, data, path.stem)
        except ParseError as exc:
            report.skipped.append(Skipped(spec.id_of(relative), str(exc)))
            continue
        except Exception as exc:  # a parser's bug on one odd file must not stop the others
            report.skipped.append(Skipped(spec.id_of(relative), f"parser failed: {exc!r}"))
            continue
        digest.update(f"{relative}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        files.append(chunk_document(spec.id_of(relative), document))
    return files, digest.hexdigest()


def build_index(
    specs: Sequence[SourceSpec], embedder: Embedder, *, reuse: Sequence[Index] = ()
) -> tuple[Index, BuildReport]:
    """One index over every source: documents parsed and chunked, built indexes loaded.

    Raises `FileNotFoundError` for a source that is not a directory and `IndexFormatError`
    for a built index this version cannot read: those are configuration errors, not files
    to skip.
    """
    started = time.perf_counter()
    report = BuildReport()
    built = [load_index(s.path, embedder) for s in specs if is_index(s.path)]
    if len(built) == len(specs) == 1:
        report.chunks = len(built[0])
        return built[0], report
    chunks: list[Chunk] = [c for index in built for c in index.chunks]
    digests = [index.digest for index in built]
    for spec in specs:
        if not is_index(spec.path):
            files, digest = _read_source(spec, report)
            chunks += drop_repeats(files)
            digests.append(digest)
    chunks = _unique(chunks, report)
    digest = hashlib.sha256("\n".join(digests).encode()).hexdigest()
    index = Index.build(chunks, embedder, digest=digest, reuse=[*built, *reuse])
    report.chunks = len(index)
    report.seconds = time.perf_counter() - started
    return index, report


def _unique(chunks: list[Chunk], report: BuildReport) -> list[Chunk]:
    seen: set[str] = set()
    kept = []
    for chunk in chunks:
        if chunk.id in seen:
            report.skipped.append(Skipped(chunk.id, "another source has a chunk of this id"))
            continue
        seen.add(chunk.id)
        kept.append(chunk)
    return kept


class LiveIndex:
    """The current index over some sources, rebuilt when they change.

    `current` is replaced in one assignment, never mutated: a search that took the old
    index finishes on it while the next one gets the new. `refresh` blocks (it reads and
    embeds); call it from a thread.
    """

    def __init__(self, specs: Sequence[SourceSpec], embedder: Embedder) -> None:
        self.specs = list(specs)
        self.embedder = embedder
        self._current: Index | None = None
        self._fingerprint = ""

    @property
    def current(self) -> Index:
        if self._current is None:
            raise RuntimeError("the knowledge base has not been built yet")
        return self._current

    def refresh(self) -> BuildReport | None:
        """Rebuild if the sources changed since the last build; the report of the build, or
        `None` if nothing changed. A build that fails or finds no chunks raises and leaves
        the current index in place."""
        # Taken before reading, so an edit made during the build shows at the next refresh.
        seen = fingerprint(self.specs)
        if seen == self._fingerprint:
            return None
        reuse = [self._current] if self._current is not None else []
        index, report = build_index(self.specs, self.embedder, reuse=reuse)
        if not index.chunks:
            raise ValueError("the knowledge sources hold no readable documents")
        self._fingerprint = seen
        if self._current is None or index.digest != self._current.digest:
            self._current = index
        return report


__all__ = [
    "BuildReport",
    "IndexFormatError",
    "LiveIndex",
    "Skipped",
    "SourceSpec",
    "build_index",
    "fingerprint",
    "walk",
]
