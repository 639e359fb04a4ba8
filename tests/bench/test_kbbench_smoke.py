"""Smoke test of the knowledge-base benchmark (`bench.kbbench`): a small corpus built, served
by a real research agent and searched, and the labelled questions scored, so the figures in
docs/benchmarks.md can be repeated. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_bench

pytestmark = pytest.mark.integration


def test_kbbench_measures_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "kb.json"
    done = run_bench("bench.kbbench", "--sizes", "200", "--rounds", "50", "--out", out, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    quality = result["quality"]
    assert quality["questions"] >= 20
    assert quality["recall@5_hybrid"] >= quality["recall@5_bm25"] > 0
    (size,) = result["sizes"]
    assert 150 <= size["chunks"] <= 200
    for key in ("build_s", "index_mb", "agent_rss_mb", "search_p50_ms", "search_p95_ms"):
        assert size[key] > 0, key
    assert size["search_p95_ms"] >= size["search_p50_ms"]
