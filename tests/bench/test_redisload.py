"""Smoke test of the Redis capacity benchmark (`bench.redisload`): a real stack runs a few
runs, their commands are counted and captured, and the capture is replayed against a
redis-server of its own (by asyncio clients, and as raw RESP through `redis-cli --pipe`), so
the figures in docs/benchmarks.md ("Redis capacity") can be repeated. No timing is asserted; the MONITOR line parser is checked on its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.redisload import parse_monitor_line

from .conftest import run_bench


def test_monitor_lines_give_back_the_exact_arguments() -> None:
    line = (
        b'+1796552617.875201 [0 127.0.0.1:37888] "HSET" "podcrew:run:run_1" "data" '
        b'"{\\"q\\":\\"a b\\\\n\\"}" "\\x00\\xff"\r\n'
    )
    command = parse_monitor_line(line)
    assert command is not None
    assert command.client == "127.0.0.1:37888"
    assert command.args == (b"HSET", b"podcrew:run:run_1", b"data", b'{"q":"a b\\n"}', b"\x00\xff")
    lua = parse_monitor_line(b'+1796552617.9 [0 lua] "XADD" "s" "*" "k" "v"\r\n')
    assert lua is not None
    assert lua.client == "lua"
    assert lua.name == "XADD"
    assert parse_monitor_line(b"+OK\r\n") is None


@pytest.mark.integration
def test_redisload_counts_the_stack_and_replays_the_same_mix(tmp_path: Path) -> None:
    out = tmp_path / "redis.json"
    done = run_bench(
        "bench.redisload",
        *("--runs", "3", "--capture-runs", "2", "--warmup", "2", "--concurrency", "2"),
        *("--latency", "0.01", "--idle", "1", "--procs", "1", "--lanes", "2"),
        *("--duration", "1", "--pipes", "2", "--pipe-runs", "40", "--out", out),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert "| **total** |" in out.with_suffix(".md").read_text()
    stack, replay, pipe = result["stack"], result["replay"], result["pipe"]
    assert stack["succeeded"] == stack["runs"] == 3
    assert replay["runs"] > 0
    assert replay["runs_per_s"] > 0
    assert replay["runs_per_s_per_core"] > 0
    # The pipes replay every run they render, with no command refused, and every queue entry
    # a replayed worker read is acknowledged by the id its XADD was given ahead.
    assert pipe["runs"] >= 40
    assert pipe["errors"] == 0, pipe["error_lines"]
    assert pipe["queue_pending_after"] == 0
    assert pipe["runs_per_s"] > 0
    assert 0 < pipe["redis_main_thread_busy"] <= 1.5
    for figures in (stack, replay, pipe):
        assert figures["commands_per_run_total"] > 0
        assert figures["redis_cpu_ms_per_run"] > 0
        # A run writes its record and events and is queued and acknowledged, on the stack
        # and in the replay alike.
        for command in ("xadd", "xack", "evalsha"):
            assert figures["commands_per_run"][command] > 0, command
    assert result["template"]["runs"] == 2
    assert result["template"]["scripts"] > 0
