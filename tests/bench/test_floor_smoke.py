"""A smoke test of `python -m bench.floor`, so the floor under the budgets cannot rot.

It runs the real floor harness (simulator, gateway and agent processes on loopback) for
eight runs, four at a time, at 50 ms per LLM call, and checks that every run was measured:
each LLM call matched in the simulator's log, each internal request timed, the CPU of both
processes counted. It asserts no timing budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_bench

LEVEL = 4
ROUNDS = 2
RUNS = LEVEL * ROUNDS
TIMED_LLM_CALLS_PER_RUN = 7  # plan and 3 x 2 research turns; the streamed write is not timed
INTERNAL_REQUESTS_PER_RUN = 4

pytestmark = pytest.mark.integration


def test_floor_measures_every_call_of_every_run(tmp_path: Path) -> None:
    done = run_bench(
        "bench.floor",
        *("--levels", LEVEL, "--rounds", ROUNDS, "--latency", "0.05"),
        *("--warmup", "2", "--out", tmp_path, "--name", "smoke"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["command"].startswith(f"python -m bench.floor --levels {LEVEL}")
    (level,) = report["levels"]
    assert level["level"] == LEVEL
    assert level["runs"] == RUNS
    assert level["llm_calls_per_run"] == 8
    assert level["llm_hop_overhead_ms"]["n"] == RUNS * TIMED_LLM_CALLS_PER_RUN
    assert level["agent_hop_overhead_ms"]["n"] == RUNS * INTERNAL_REQUESTS_PER_RUN
    # Overheads are a caller's time minus the callee's for the same call: never negative.
    assert level["llm_hop_overhead_ms"]["p50"] > 0
    assert level["agent_hop_overhead_ms"]["p50"] > 0
    cpu = level["cpu_ms_per_run"]
    assert cpu["gateway"] > 0
    assert cpu["agent"] > 0
    assert cpu["total"] == pytest.approx(cpu["gateway"] + cpu["agent"], abs=0.02)
    assert level["runs_per_s"] > 0
    assert f"| {LEVEL} |" in done.stdout  # the table row of the level
