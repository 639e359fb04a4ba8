"""`podcrew eval` as CI runs it: the shipped golden set on a stack it starts, gated on the
stored baseline; a worse report set failing the gate; the judge on the simulated API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "eval" / "golden.jsonl"
BASELINE = ROOT / "eval" / "baseline.json"


def podcrew_eval(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podcrew_cli", "eval", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def golden_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("golden")
    return podcrew_eval(GOLDEN, "--baseline", BASELINE, "--out", out), out


def test_the_golden_set_holds_its_baseline(golden_run: tuple[Any, Path]) -> None:
    done, out = golden_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no regression against" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["items"] == len(GOLDEN.read_text().splitlines())
    assert results["summary"]["outcome_accuracy"] >= 0.9
    md = (out / "results.md").read_text()
    # Every run names the prompt sets it used, and the table reports by them.
    version = r"planner:[0-9a-f]{12},research:[0-9a-f]{12},writer:[0-9a-f]{12}"
    assert re.search(rf"^\| {version} \| {results['summary']['items']} \|", md, re.MULTILINE)


def _doctor(run: dict[str, Any]) -> dict[str, Any]:
    """The run with its report's first section written twice and a citation no source has."""
    result = run.get("result")
    if not result or "\n## " not in result["report"]:
        return run
    head, first, *rest = result["report"].split("\n## ")
    report = "\n## ".join([head, first, first, *rest]).replace(" [1]", " [99]", 1)
    return {**run, "result": {**result, "report": report}}


def test_a_worse_report_set_fails_the_gate_and_says_why(
    golden_run: tuple[Any, Path], tmp_path: Path
) -> None:
    _, out = golden_run
    doctored = tmp_path / "runs.jsonl"
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    doctored.write_text(
        "\n".join(json.dumps({"id": e["id"], "run": _doctor(e["run"])}) for e in lines) + "\n"
    )
    done = podcrew_eval(
        GOLDEN, "--runs", doctored, "--baseline", BASELINE, "--out", tmp_path / "out"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression citation_validity" in done.stdout
    assert "regression redundancy" in done.stdout


def test_the_judge_grades_through_the_simulated_messages_api_and_is_counted_apart(
    tmp_path: Path,
) -> None:
    dataset = tmp_path / "set.jsonl"
    lines = GOLDEN.read_text().splitlines()
    dataset.write_text("\n".join([lines[0], lines[-7]]) + "\n")  # an answer, a not-found
    done = podcrew_eval(dataset, "--llm", "simulated", "--judge", "--out", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    judge = results["judge"]
    # One forced-tool call per report that has one; none for a question that failed.
    assert judge["llm_calls"] == 2 and judge["total_tokens"] > 0 and judge["cost_usd"] > 0
    [answer, not_found] = results["reports"]
    assert answer["judge_quality"] is not None and 1 <= answer["judge_quality"] <= 5
    # The runs' own usage does not include the judge's.
    runs = [json.loads(line)["run"] for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["usage"]["llm_calls"] for r in runs] == [answer["llm_calls"], not_found["llm_calls"]]
    assert results["summary"]["judge_quality"] is not None
    assert "Judge (counted apart from the runs)" in (tmp_path / "results.md").read_text()


def test_recorded_scores_are_stored_with_the_runs(stack: Any, tmp_path: Path) -> None:
    """`--record` against a running stack: each scored run's evaluation is stored with it,
    where `GET /v1/runs/{id}` (and so an AgentRun's status) shows it."""
    dataset = tmp_path / "two.jsonl"
    dataset.write_text("\n".join(GOLDEN.read_text().splitlines()[:2]) + "\n")
    out = tmp_path / "out"
    done = podcrew_eval(dataset, "--url", stack.config.api_url, "--record", "--out", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored the evaluations of 2 runs" in done.stdout
    reports = {r["id"]: r for r in json.loads((out / "results.json").read_text())["reports"]}
    for line in (out / "runs.jsonl").read_text().splitlines():
        entry = json.loads(line)
        run = httpx.get(f"{stack.config.api_url}/v1/runs/{entry['run']['id']}").json()
        evaluation = run["evaluation"]
        assert evaluation["evaluator"] == "podcrew-eval lexical"
        scores = evaluation["scores"]
        assert scores["citation_validity"] == 1.0
        assert scores["source_recall"] == reports[entry["id"]]["source_recall"]


def test_record_needs_a_running_stack(tmp_path: Path) -> None:
    done = podcrew_eval(GOLDEN, "--record", "--out", tmp_path)
    assert done.returncode == 2
    assert "give --url" in done.stdout
