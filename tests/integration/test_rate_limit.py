"""One provider rate limit shared by every replica, under load.

Four research-agent processes, the writer and the worker call podcrew's simulated Messages
API, which enforces 120 requests and a number of tokens per minute per model and answers
429 past them. The scenario is `python -m bench.ratelimit` (docs/benchmarks.md), run here at
a small size: with the shared limiter no process sees a 429, the binding model's calls go
through at the configured rate (within 10 %), and every run ends with a result or a reason;
without it the same load draws 429s and retries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RPM = 120


def _scenario(mode: str, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.ratelimit", "--mode", mode, "--json"]
    argv += ["--rpm", str(RPM), "--seconds", str(seconds), "--concurrency", "6"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def _every_run_ended_with_a_result_or_a_reason(outcome: dict[str, Any]) -> None:
    assert set(outcome["runs"]) <= {"succeeded", "failed", "refused"}, outcome
    assert outcome["unexplained_failures"] == 0, outcome
    assert sum(outcome["runs"].values()) > 0


def test_with_the_shared_limiter_no_replica_sees_a_429_at_full_rate() -> None:
    outcome = _scenario("on", seconds=20)
    assert outcome["provider_429s"] == 0, outcome
    assert outcome["retries"] == 0, outcome
    assert abs(outcome["calls_per_minute"] - RPM) <= 0.1 * RPM, outcome
    assert "refused" not in outcome["runs"], outcome
    _every_run_ended_with_a_result_or_a_reason(outcome)


def test_without_it_the_same_load_draws_429s_and_retries() -> None:
    outcome = _scenario("off", seconds=10)
    assert outcome["provider_429s"] > 0, outcome
    assert outcome["retries"] > 0, outcome
    _every_run_ended_with_a_result_or_a_reason(outcome)
