#!/usr/bin/env python3
"""Export the research agent's default knowledge base from the Python documentation.

The standard library ships the language reference's help topics as plain text in
`pydoc_data.topics` (what `help("yield")` prints). This script writes each topic as one
markdown file, `<out>/<topic>.md`, starting with a `# <Title>` heading, so the research
agent has real text to search on a fresh machine with no network.

Run once and commit the output; it is deterministic for a given Python version:

    uv run python scripts/export-corpus.py
    uv run python scripts/export-corpus.py --out /tmp/corpus   # somewhere else

Topics whose text is identical to an earlier topic (e.g. `else` is `if`) are written once;
`MANIFEST.json` next to the files records the Python version, the topics and their
aliases. The text is the Python documentation, under the PSF License.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path

DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent
    / "services/research-agent/src/podcrew_research/corpus/python-docs"
)
# reST underline characters, in the order the Python docs use them for heading levels.
_UNDERLINES = {"*": "#", "=": "##", "-": "###", "~": "####", "^": "####"}
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def to_markdown(text: str) -> str:
    """Turn reST-style underlined headings into markdown headings; leave the rest as is."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        marker = nxt[:1]
        if (
            line.strip()
            and marker in _UNDERLINES
            and nxt == marker * len(nxt)
            and len(nxt) >= len(line.rstrip()) >= 1
        ):
            out.append(f"{_UNDERLINES[marker]} {line.strip()}")
            i += 2
            continue
        out.append(line.rstrip())
        i += 1
    body = "\n".join(out).strip("\n")
    # Collapse runs of blank lines: paragraphs are what the knowledge base splits on.
    return re.sub(r"\n{3,}", "\n\n", body) + "\n"


def export(out: Path) -> dict[str, object]:
    """Write every topic under `out`, replacing an earlier export; return the manifest."""
    from pydoc_data.topics import topics  # imported here: it is 0.5 MB of strings

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.md"):
        old.unlink()
    written: dict[str, str] = {}  # topic text -> file stem, to spot aliases
    aliases: dict[str, str] = {}
    for name in sorted(topics):
        if not _SAFE_NAME.match(name):
            raise SystemExit(f"topic {name!r} is not a safe file name")
        text = topics[name]
        if text in written:
            aliases[name] = written[text]
            continue
        markdown = to_markdown(text)
        if not markdown.startswith("# "):
            markdown = f"# {name}\n\n{markdown}"
        (out / f"{name}.md").write_text(markdown, encoding="utf-8")
        written[text] = name
    manifest: dict[str, object] = {
        "source": "pydoc_data.topics (the Python language reference help topics)",
        "python_version": platform.python_version(),
        "license": "Python documentation, PSF License Agreement",
        "topics": sorted(written.values()),
        "aliases": aliases,
        "generator": "scripts/export-corpus.py",
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    export(args.out)
    files = list(args.out.glob("*.md"))
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} topics ({size / 1024:.0f} KiB) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
