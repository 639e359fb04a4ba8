"""Smoke tests of the micro-benchmarks that justify podcrew's deviations from a library's
normal API (`bench.luabench`, `bench.sdkbench`), so the measurements quoted in the code can
be repeated. Each runs for real with a few operations and checks that every form was
measured; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import run_bench

pytestmark = pytest.mark.integration


def _run(module: str, *args: str, tmp_path: Path) -> dict[str, object]:
    out = tmp_path / "out.json"
    more = ("--out", str(out)) if module == "bench.luabench" else ()
    done = run_bench(module, *args, *more, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text() if out.exists() else done.stdout.strip().splitlines()[-1]
    result: dict[str, object] = json.loads(text)
    return result


def test_luabench_measures_both_forms_of_every_step(tmp_path: Path) -> None:
    result = _run("bench.luabench", "--ops", "50", "--concurrency", "4", tmp_path=tmp_path)
    steps = {name.split("@")[0] for name in result}
    assert steps == {"ledger_check", "ledger_charge", "publish_events"}
    for forms in result.values():
        assert isinstance(forms, dict) and set(forms) == {"lua", "pipeline"}
        for figures in forms.values():
            assert figures["client_us_per_op"] > 0


def test_sdkbench_measures_the_provider_and_the_sdk_for_both_calls(tmp_path: Path) -> None:
    result = _run("bench.sdkbench", "--calls", "20", "--concurrency", "2", tmp_path=tmp_path)
    assert set(result) == {"research turn (complete)", "report (stream)"}
    for ways in result.values():
        assert isinstance(ways, dict) and len(ways) == 2
        for modes in ways.values():
            assert set(modes) == {"sequential", "2 at once"}
            assert all(cpu > 0 for cpu in modes.values())
