"""`podcrew kb build DIR... -o INDEX`: index a corpus once, for research agents to load.

The index is built by the same code an agent runs when it is given plain files
(`podcrew_kb`), so a built index and one built at start answer alike. The knowledge base's
parsers and embedding model come with the `kb` extra of podcrew-cli; without it this
command says how to get them.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from rich.console import Console


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`kb build` and its options."""
    kb = sub.add_parser("kb", help="knowledge base: build an index of your documents")
    commands = kb.add_subparsers(dest="kb_command", required=True)
    build = commands.add_parser(
        "build",
        help="index directories of Markdown, text, HTML and PDF files (PATH or NAME=PATH)",
    )
    build.add_argument(
        "sources",
        nargs="+",
        metavar="DIR",
        help="a directory of documents, or NAME=DIR to name the source in citations",
    )
    build.add_argument("-o", "--output", required=True, metavar="INDEX", help="index directory")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(args: argparse.Namespace, console: Console) -> int:
    """Build the index the arguments describe; 0 on success, 1 if nothing could be indexed,
    2 if the knowledge-base extra is not installed."""
    try:
        from podcrew_kb.embed import load_embedder
        from podcrew_kb.sources import SourceSpec, build_index
        from podcrew_kb.store import save_index
    except ImportError:
        console.print("[red]podcrew kb needs the kb extra: pip install 'podcrew-cli[kb]'[/red]")
        return 2
    # bm25s logs each step at DEBUG on its own logger: not for a person at a terminal.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    started = time.perf_counter()
    specs = [SourceSpec.parse(entry) for entry in args.sources]
    try:
        with console.status("reading and embedding…"):
            index, report = build_index(specs, load_embedder())
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    for skipped in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {skipped.path}: {skipped.reason}")
    if not index.chunks:
        console.print("[red]no readable documents: nothing to index[/red]")
        return 1
    output = Path(args.output)
    save_index(index, output, extra={"files": report.files, "skipped": len(report.skipped)})
    console.print(
        f"indexed {report.files - len(report.skipped)} of {report.files} files into "
        f"{len(index)} chunks in {time.perf_counter() - started:.1f}s: {output} "
        f"({_size(output) / 1e6:.1f} MB)"
    )
    return 0
