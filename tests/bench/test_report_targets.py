"""The verdict of `make bench` on DESIGN.md's budgets, on synthetic results: each budget is
met, missed, or not measured (never "met") by the figures of one run."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report


def row(
    system: str,
    level: int,
    *,
    ratio: float = 1.02,
    cpu_ms: float = 18.0,
    rps: float = 47.0,
    ok: int | None = None,
    runs: int | None = None,
) -> dict[str, Any]:
    """A level's row as the harness writes it, with only the figures the verdict reads."""
    runs = level * 3 if runs is None else runs
    return {
        "system": system,
        "level": level,
        "runs": runs,
        "succeeded": runs if ok is None else ok,
        "errors": {} if ok is None or ok == runs else {"timeout": runs - ok},
        "e2e_ms": {"p50": 2000 * ratio},
        "critical_path_ms": {"p50": 2000.0},
        "e2e_over_critical": {"p50_over_p50": ratio},
        "throughput": {"steady_rps": rps},
        "cpu": {"ms_per_run": cpu_ms, "cores_busy": {"measured": rps * cpu_ms / 1000}},
    }


def floor_level(level: int, cpu_ms: float) -> dict[str, Any]:
    return {"level": level, "cpu_ms_per_run": {"total": cpu_ms, "gateway": 0, "agent": 0}}


def result(**overrides: Any) -> dict[str, Any]:
    """A whole run that meets every budget, with `overrides` on top."""
    base = {
        "podcrew": [
            row("podcrew", 10, ratio=1.03),
            row("podcrew", 50, ratio=1.08),
            row("podcrew", 500),
        ],
        "floor": [floor_level(10, 14.0), floor_level(50, 13.0), floor_level(500, 13.0)],
        "baseline": [row("baseline", 500, rps=2.0, cpu_ms=40.0)],
        "langgraph": [row("langgraph", 500, rps=30.0, cpu_ms=25.0)],
    }
    return {**base, **overrides}


def met(verdicts: dict[str, Any]) -> dict[str, bool | None]:
    return {name: v["met"] for name, v in verdicts.items()}


def test_a_run_within_every_budget_meets_each() -> None:
    verdicts = report.targets(result())
    assert met(verdicts) == {
        "latency_at_10": True,
        "latency_at_50": True,
        "cpu_vs_floor_at_10": True,
        "cpu_vs_floor_at_50": True,
        "cpu_vs_floor_at_500": True,
        "complete_at_500": True,
        "ahead_of_langgraph_at_500": True,
        "far_ahead_of_tutorial_at_500": True,
        "no_regression": None,  # judged between two runs, never within one
    }
    cpu = verdicts["cpu_vs_floor_at_500"]
    assert (cpu["podcrew_ms"], cpu["floor_ms"]) == (18.0, 13.0)
    assert cpu["value"] == pytest.approx(18 / 13, rel=1e-3)
    # runs per core-second: 1000 / CPU ms per run, podcrew's against LangGraph's
    lang = verdicts["ahead_of_langgraph_at_500"]
    assert lang["podcrew_runs_per_core_s"] == pytest.approx(55.56, abs=0.01)
    assert lang["langgraph_runs_per_core_s"] == pytest.approx(40.0)
    assert verdicts["far_ahead_of_tutorial_at_500"]["value"] == pytest.approx(23.5)


def test_latency_over_its_limit_is_missed_at_each_level() -> None:
    podcrew = [row("podcrew", 10, ratio=1.06), row("podcrew", 50, ratio=1.12), row("podcrew", 500)]
    verdicts = report.targets(result(podcrew=podcrew))
    assert verdicts["latency_at_10"]["met"] is False
    assert verdicts["latency_at_50"]["met"] is False
    # 1.08 at 50 is within its own limit (1.10), though above the one at 10
    podcrew[1] = row("podcrew", 50, ratio=1.08)
    assert report.targets(result(podcrew=podcrew))["latency_at_50"]["met"] is True


def test_cpu_over_one_and_a_half_floors_is_missed_at_that_level_only() -> None:
    floor = [floor_level(10, 10.0), floor_level(50, 13.0), floor_level(500, 13.0)]
    verdicts = report.targets(result(floor=floor))
    assert verdicts["cpu_vs_floor_at_10"]["met"] is False  # 18 / 10 = 1.8
    assert verdicts["cpu_vs_floor_at_500"]["met"] is True
    assert "podcrew 18.0 ms / floor 10.0 ms per run = 1.80" in report.render_budgets(verdicts)


def test_without_the_floor_the_cpu_budget_is_not_measured() -> None:
    verdicts = report.targets(result(floor=None))
    assert not any(name.startswith("cpu_vs_floor_at") for name in verdicts)
    assert verdicts["cpu_vs_floor"]["met"] is None
    text = report.render_budgets(verdicts)
    assert "--no-floor" in text
    assert "not measured" in text


def test_a_failed_run_at_500_misses_completion() -> None:
    podcrew = [row("podcrew", 10), row("podcrew", 50), row("podcrew", 500, ok=1499, runs=1500)]
    verdict = report.targets(result(podcrew=podcrew))["complete_at_500"]
    assert verdict["met"] is False
    assert verdict["value"] == "1499/1500"
    assert verdict["errors"] == {"timeout": 1}


def test_behind_langgraph_per_busy_core_is_missed_even_with_more_runs_per_second() -> None:
    # podcrew 47 runs/s at 18 ms per run; LangGraph 30 runs/s at 15 ms: more per core.
    verdicts = report.targets(result(langgraph=[row("langgraph", 500, rps=30.0, cpu_ms=15.0)]))
    assert verdicts["ahead_of_langgraph_at_500"]["met"] is False
    assert "MISSED" in report.render_budgets(verdicts)


def test_less_than_ten_times_the_tutorial_is_missed() -> None:
    verdicts = report.targets(result(baseline=[row("baseline", 500, rps=5.0)]))
    assert verdicts["far_ahead_of_tutorial_at_500"]["met"] is False  # 47 / 5 = 9.4
    verdicts = report.targets(result(baseline=[row("baseline", 500, rps=4.7)]))
    assert verdicts["far_ahead_of_tutorial_at_500"]["met"] is True  # exactly 10 times


def test_peers_not_run_are_not_measured() -> None:
    verdicts = report.targets(result(langgraph=[], baseline=[]))
    assert verdicts["ahead_of_langgraph_at_500"]["met"] is None
    assert verdicts["far_ahead_of_tutorial_at_500"]["met"] is None
    verdicts = report.targets(result(podcrew=[row("podcrew", 10)]))
    assert verdicts["complete_at_500"]["met"] is None
    assert verdicts["latency_at_50"]["met"] is None
