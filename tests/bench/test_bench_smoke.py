"""A smoke test of the benchmark harness, so `make bench` cannot rot.

It runs the real harness (`python -m bench`) at a tiny level: the floor, the whole stack, two
runs at 50 ms per LLM call, the baseline and the LangGraph peer for two runs each, four SSE
subscribers. It asserts that the report has every field and that the values are sane (counts
add up, durations positive, the critical path below the end-to-end time), and that the CPU
verdict compares the two figures measured in this run. It asserts no timing budget:
benchmarks are never pass/fail tests on a shared machine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import run_bench

LATENCY_S = 0.05
RUNS = 2
CALLS_PER_RUN = 8  # plan, 3 research calls of 2 turns each, write
FANOUT = 3

pytestmark = pytest.mark.integration

PERCENTILES = ("p50", "p95", "p99", "mean", "n")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    done = run_bench(
        "bench",
        *("--levels", RUNS, "--rounds", "1", "--latency", LATENCY_S),
        *("--baseline-levels", RUNS, "--langgraph-levels", RUNS, "--streams", "4"),
        *("--warmup", "0", "--out", out, "--name", "smoke", "--quiet"),
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "smoke.json").read_text()), done.stdout


def _summary_ok(summary: dict[str, Any], n: int) -> None:
    assert set(PERCENTILES) <= set(summary)
    assert summary["n"] == n
    assert summary["p50"] is not None
    assert summary["p50"] <= summary["p95"] <= summary["p99"]


def test_report_has_every_section(report: tuple[dict[str, Any], str]) -> None:
    result, table = report
    assert {
        "machine",
        "config",
        "stack",
        "floor",
        "podcrew",
        "baseline",
        "langgraph",
        "streams",
        "targets",
    } <= set(result)
    assert result["machine"]["cpus"] >= 1
    assert result["config"]["latency_s"] == LATENCY_S
    assert [row["level"] for row in result["podcrew"]] == [RUNS]
    assert [row["level"] for row in result["baseline"]] == [RUNS]
    assert "| podcrew | 2 |" in table
    assert "| baseline | 2 |" in table
    assert "| langgraph | 2 |" in table
    assert "Budgets (DESIGN.md):" in table


def test_floor_runs_in_the_same_invocation(report: tuple[dict[str, Any], str]) -> None:
    result, table = report
    (level,) = result["floor"]
    assert level["level"] == RUNS
    assert level["runs"] == RUNS
    assert level["cpu_ms_per_run"]["total"] > 0
    assert level["runs_per_s"] > 0
    # The verdict compares this run's two figures, and shows both with their ratio.
    verdict = result["targets"][f"cpu_vs_floor_at_{RUNS}"]
    podcrew_ms = result["podcrew"][0]["cpu"]["ms_per_run"]
    assert verdict["podcrew_ms"] == podcrew_ms
    assert verdict["floor_ms"] == level["cpu_ms_per_run"]["total"]
    assert verdict["value"] == pytest.approx(podcrew_ms / verdict["floor_ms"], rel=1e-3)
    assert verdict["met"] is (verdict["value"] <= 1.5)
    assert "The floor (bench/floor.py" in table
    assert f"floor {verdict['floor_ms']:.1f} ms per run" in table


def test_langgraph_peer_answers_every_run(report: tuple[dict[str, Any], str]) -> None:
    row = report[0]["langgraph"][0]
    assert row["system"] == "langgraph"
    assert row["runs"] == row["succeeded"] == RUNS
    assert row["errors"] == {}
    # The same calls as podcrew's: the deterministic model answered the same messages.
    assert row["llm_calls_per_run"]["p50"] == CALLS_PER_RUN
    assert row["fanout"]["p50"] == FANOUT
    _summary_ok(row["e2e_ms"], RUNS)
    assert row["e2e_ms"]["p50"] >= row["critical_path_ms"]["p50"] * 0.95
    assert row["cpu"]["ms_per_run_by_process"]["langgraph"] > 0


def test_podcrew_level_is_complete_and_sane(report: tuple[dict[str, Any], str]) -> None:
    row = report[0]["podcrew"][0]
    assert row["runs"] == row["succeeded"] == RUNS
    assert row["errors"] == {}
    assert row["throughput"]["overall_rps"] > 0
    _summary_ok(row["e2e_ms"], RUNS)
    _summary_ok(row["critical_path_ms"], RUNS)
    # plan + two research turns + write, each at least the simulated latency
    assert row["critical_path_ms"]["p50"] >= 4 * LATENCY_S * 1000 * 0.95
    assert row["e2e_ms"]["p50"] >= row["critical_path_ms"]["p50"] * 0.95
    assert row["e2e_over_critical"]["p50_over_p50"] >= 0.95
    assert row["llm_calls_per_run"]["p50"] == CALLS_PER_RUN
    assert row["fanout"]["p50"] == FANOUT

    hops = row["llm_hop_overhead_ms"]
    assert hops["matched_calls"] == hops["simulator_calls"] == RUNS * CALLS_PER_RUN
    for stage in ("plan", "research", "write"):
        assert hops[stage]["n"] > 0
    assert hops["all"]["p50"] > -1.0  # the agent cannot see a call as shorter than the server
    research = row["internal_hops_ms"]["research-agent"]
    writer = row["internal_hops_ms"]["writer-agent"]
    assert research["requests"] == RUNS * FANOUT
    assert writer["requests"] == RUNS
    assert research["client_mean"] >= research["server_mean"] > 0
    # Per request, from Server-Timing: what the hop added, never negative, under the client's.
    for hop in (research, writer):
        assert hop["hop_overhead_p50"] is not None
        assert 0 <= hop["hop_overhead_p50"] <= hop["hop_overhead_p95"]
    commands = row["redis_commands_per_run"]
    assert commands["all"] == pytest.approx(sum(v for k, v in commands.items() if k != "all"), 0.01)
    assert commands.get("xadd", 0) > 0  # every run publishes events
    assert set(row["timeline_ms"]) == {
        "accept",
        "queue",
        "plan_out",
        "plan_back",
        "research_out",
        "research_between",
        "research_back",
        "fanin",
        "write_out",
        "write_back",
        "notify",
    }
    assert all(segment["n"] == RUNS for segment in row["timeline_ms"].values())

    cpu = row["cpu"]
    assert {"api", "worker-0", "research-agent", "writer-agent", "redis"} <= set(
        cpu["ms_per_run_by_process"]
    )
    assert cpu["ms_per_run"] > 0
    assert cpu["ms_per_run"] >= cpu["ms_per_run_without_redis"]
    memory = row["memory"]
    assert all(kib > 0 for kib in memory["rss_peak_kib"].values())
    assert "kib_per_inflight_run" in memory


def test_baseline_level_is_complete(report: tuple[dict[str, Any], str]) -> None:
    row = report[0]["baseline"][0]
    assert row["runs"] == row["succeeded"] == RUNS
    assert row["errors"] == {}
    _summary_ok(row["e2e_ms"], RUNS)
    _summary_ok(row["critical_path_ms"], RUNS)
    assert row["llm_calls_per_run"]["p50"] == CALLS_PER_RUN
    # research one sub-question after another: the run takes longer than its critical path
    assert row["e2e_ms"]["p50"] > row["critical_path_ms"]["p50"]
    assert row["cpu"]["ms_per_run_by_process"]["baseline"] > 0


def test_every_stream_got_every_event(report: tuple[dict[str, Any], str]) -> None:
    streams = report[0]["streams"]
    assert streams["subscribers"] == streams["open_at_once"] == streams["complete"] == 4
    assert streams["errors"] == 0
    assert streams["events_per_stream"] > 5
    assert streams["api_rss_kib"]["peak"] >= streams["api_rss_kib"]["idle"] > 0
    assert report[0]["targets"]["streams_every_event_delivered"]["met"] is True
