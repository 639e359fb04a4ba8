"""Knowledge-base benchmark: build time, index size, research-agent RSS and search latency
at several corpus sizes, and retrieval quality on the labelled questions.

    uv run --frozen python -m bench.kbbench                      # 1k, 10k, 50k chunks
    uv run --frozen python -m bench.kbbench --sizes 1000 --out bench/results/kb.json

The synthetic corpus of N chunks is made from the bundled Python documentation: section i of
the corpus is the text of bundled chunk i (mod the bundled count) followed by two sentences of
another, so every section is distinct, reads like documentation and keeps the bundled
vocabulary. Each size is built with `podcrew kb build` (a child process, so its peak RSS is
its own), then served by a real research agent process loading that index, whose RSS is read
once it answers; search latency is the hybrid search the `kb_search` tool runs, in process,
over the same index. Quality is recall@5 of hybrid and BM25 alone over the bundled corpus on
`bench/data/kb-questions.json`, questions written by reading the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.analysis import percentile
from podcrew_cli.stack import free_port
from podcrew_kb.embed import load_embedder
from podcrew_kb.index import Index
from podcrew_kb.sources import SourceSpec, build_index
from podcrew_kb.store import load_index
from podcrew_research.settings import DEFAULT_CORPUS_DIR

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = REPO / "bench" / "data" / "kb-questions.json"
SECTIONS_PER_FILE = 20
# Sections stay under one chunk's target size, so a section is one chunk.
SECTION_CHARS = 1000
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def synthetic_corpus(bundled: Index, size: int, root: Path) -> None:
    """`size` sections of documentation-like Markdown under `root`."""
    chunks = bundled.chunks
    root.mkdir(parents=True)
    for start in range(0, size, SECTIONS_PER_FILE):
        parts = [f"# Synthetic document {start // SECTIONS_PER_FILE}\n"]
        for i in range(start, min(start + SECTIONS_PER_FILE, size)):
            base = chunks[i % len(chunks)]
            other = _SENTENCE.split(chunks[(i * 7 + 3) % len(chunks)].text)
            borrowed = other[(i // len(chunks)) % max(1, len(other)) :][:2]
            extra = " ".join(" ".join(borrowed).split())[:300]
            # One paragraph of the base (so one chunk per section), then the borrowed sentences.
            lead = " ".join(base.text.split())[: SECTION_CHARS - len(extra) - 2]
            body = f"{lead} (section {i})\n\n{extra}"
            parts.append(f"## {base.title} {i}\n\n{body}\n")
        (root / f"doc-{start // SECTIONS_PER_FILE:05d}.md").write_text("\n".join(parts))


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(corpus: Path, out: Path) -> dict[str, float]:
    """`podcrew kb build` in a child process: wall time and its peak RSS."""
    code = (
        "import resource, runpy, sys; sys.argv = ['podcrew', 'kb', 'build', sys.argv[1], '-o',"
        " sys.argv[2]]\ntry:\n    runpy.run_module('podcrew_cli', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(corpus), str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    seconds = time.perf_counter() - started
    maxrss_kb = int(done.stdout.rsplit("MAXRSS", 1)[1].split()[0])
    return {"build_s": round(seconds, 2), "build_peak_rss_mb": round(maxrss_kb / 1024, 1)}


def agent_rss(index_dir: Path) -> dict[str, float]:
    """A real research agent started on the index: seconds until it answers, and its RSS."""
    port = free_port()
    env = {
        **os.environ,
        "PODCREW_RESEARCH_PORT": str(port),
        "PODCREW_RESEARCH_KB_SOURCES": str(index_dir),
        "PODCREW_RESEARCH_KB_REFRESH_INTERVAL_S": "0",
        "PODCREW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    started = time.perf_counter()
    agent = subprocess.Popen(
        [sys.executable, "-m", "podcrew_research"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1.0) as client:
            while True:
                if agent.poll() is not None:
                    raise RuntimeError("the research agent exited during start-up")
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        ready_s = time.perf_counter() - started
        status = Path(f"/proc/{agent.pid}/status").read_text()
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    finally:
        agent.terminate()
        agent.wait(30)
    return {"agent_start_s": round(ready_s, 2), "agent_rss_mb": round(rss_kb / 1024, 1)}


def search_latency(index: Index, queries: list[str], rounds: int) -> dict[str, float]:
    """Hybrid search as `kb_search` runs it (k=5): p50/p95/max in milliseconds."""
    for query in queries[:5]:
        index.search(query, 5)  # first calls warm caches; not what a steady agent sees
    timings = []
    for i in range(rounds):
        query = queries[i % len(queries)]
        started = time.perf_counter()
        index.search(query, 5)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "search_p50_ms": round(percentile(timings, 50) or 0.0, 3),
        "search_p95_ms": round(percentile(timings, 95) or 0.0, 3),
        "search_max_ms": round(max(timings), 3),
    }


def quality(bundled: Index) -> dict[str, Any]:
    """Recall@5 of hybrid, BM25 alone and dense alone on the labelled questions."""
    questions = json.loads(QUESTIONS.read_text())["questions"]
    ids = [c.id for c in bundled.chunks]
    missing = [a for q in questions for a in q["answers"] if a not in ids]
    if missing:
        raise SystemExit(f"labelled answers not in the bundled corpus: {missing}")
    found = {"hybrid": 0, "bm25": 0, "dense": 0}
    for q in questions:
        answers = set(q["answers"])
        rankings = {
            "hybrid": [h.chunk.id for h in bundled.search(q["question"], 5)],
            "bm25": [ids[i] for i in bundled.bm25_ranking(q["question"])[:5]],
            "dense": [ids[i] for i in bundled.dense_ranking(q["question"])[0][:5]],
        }
        for name, ranking in rankings.items():
            found[name] += bool(answers & set(ranking))
    return {
        "questions": len(questions),
        **{f"recall@5_{name}": round(n / len(questions), 3) for name, n in found.items()},
    }


def measure_size(bundled: Index, size: int, rounds: int, work: Path) -> dict[str, Any]:
    """Every figure for a corpus of `size` chunks."""
    corpus, out = work / f"corpus-{size}", work / f"index-{size}"
    synthetic_corpus(bundled, size, corpus)
    figures: dict[str, Any] = {"target_chunks": size, **build(corpus, out)}
    figures["index_mb"] = round(_tree_bytes(out) / 1e6, 2)
    index = load_index(out, bundled.embedder)
    figures["chunks"] = len(index)
    queries = json.loads(QUESTIONS.read_text())["questions"]
    texts = [q["question"] for q in queries] + [
        c.title for c in index.chunks[:: max(1, size // 50)]
    ]
    figures.update(search_latency(index, texts, rounds))
    figures.update(agent_rss(out))
    shutil.rmtree(corpus)
    shutil.rmtree(out)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kbbench", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,50000", help="chunk counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=2000, help="searches timed per size")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    bundled, _ = build_index([SourceSpec(DEFAULT_CORPUS_DIR)], load_embedder())
    result: dict[str, Any] = {"cpus": os.cpu_count(), "quality": quality(bundled), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="kbbench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            figures = measure_size(bundled, size, args.rounds, Path(tmp))
            result["sizes"].append(figures)
            print(json.dumps(figures), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
