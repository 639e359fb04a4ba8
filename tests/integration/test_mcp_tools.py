"""The real stack with tools from a real MCP server (tests/servers/mcp_docs.py, built with the
official SDK and served over Streamable HTTP on loopback, as its own process): a report cites
an MCP document; a tool that errors, one that hangs past its time and one that changes the
tool list leave runs that complete; and a server that is down leaves the agent ready and the
run complete, saying the server's tools were unavailable."""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podcrew_cli.stack import LOOPBACK, Stack, free_port

pytestmark = pytest.mark.integration

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "servers" / "mcp_docs.py"
DOCUMENT = "mcp:docs.search_handbook:handbook://deploys/blue-green"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the MCP server exited"
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the MCP server did not start listening")


@pytest.fixture
def mcp_url(tmp_path: Path) -> Iterator[str]:
    """A fresh MCP docs server (its tool list starts without the glossary tool)."""
    port = free_port()
    with (tmp_path / "mcp.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_port(port, process)
            yield f"http://{LOOPBACK}:{port}/mcp"
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:  # a client's open stream holds uvicorn's shutdown
                process.kill()
                process.wait(5)


def _servers(url: str, **extra: Any) -> dict[str, str]:
    server = {"name": "docs", "url": url, "timeout_s": 2, **extra}
    return {"PODCREW_RESEARCH_MCP_SERVERS": json.dumps([server])}


def _wait_connected(stack: Stack, timeout_s: float = 20) -> None:
    url = f"http://{LOOPBACK}:{stack.config.research_port}/metrics"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(r'podcrew_mcp_server_up\{server="docs"\} 1\.0', httpx.get(url).text):
            return
        time.sleep(0.1)
    raise AssertionError("the research agent never connected to the MCP server")


def _run(stack: Stack, question: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run to its end, and its events (`research.finished`, `tool.called` ...)."""
    with httpx.Client(base_url=stack.config.api_url, timeout=60.0) as client:
        response = client.post("/v1/runs?wait=45", json={"question": question})
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        lines = client.get(f"/v1/runs/{run['id']}/events").text.splitlines()
    events: list[dict[str, Any]] = []
    for kind, data in itertools.pairwise(lines):
        if kind.startswith("event: ") and data.startswith("data: "):
            events.append({"event": kind[7:], "data": json.loads(data[6:])})
    return run, events


def _tool_calls(events: list[dict[str, Any]]) -> dict[str, bool]:
    return {e["data"]["name"]: e["data"]["ok"] for e in events if e["event"] == "tool.called"}


def test_a_report_cites_an_mcp_document(mcp_url: str, make_stack: Any) -> None:
    stack = make_stack(env=_servers(mcp_url, cache=True))
    _wait_connected(stack)

    run, events = _run(stack, "How does the team handbook describe quorble deploys?")

    assert run["status"] == "succeeded", run
    cited = {s["source"]["id"] for s in run["result"]["sources"]}
    assert DOCUMENT in cited, cited
    titles = {s["source"]["title"] for s in run["result"]["sources"]}
    assert "Blue-green deploys" in titles
    assert _tool_calls(events).get("docs__search_handbook") is True


def test_failing_hanging_and_changing_tools_leave_runs_complete(
    mcp_url: str, make_stack: Any
) -> None:
    stack = make_stack(env=_servers(mcp_url))
    _wait_connected(stack)

    run, events = _run(stack, "Why would the widget registry explode?")
    assert run["status"] == "succeeded", run
    assert _tool_calls(events)["docs__explode_widget_registry"] is False

    started = time.monotonic()
    run, events = _run(stack, "How many sleepy llamas does the census count?")
    assert run["status"] == "succeeded", run
    assert _tool_calls(events)["docs__sleepy_llama_census"] is False
    assert time.monotonic() - started < 30, "the hanging tool held the run"

    run, events = _run(stack, "Refresh the tool catalog, please?")
    assert _tool_calls(events)["docs__refresh_tool_catalog"] is True
    deadline = time.monotonic() + 20
    for attempt in range(1, 100):
        # Worded anew each time: a repeated question could be answered from the result cache.
        run, events = _run(stack, f"What does the glossary say a quorble is (attempt {attempt})?")
        if "docs__lookup_glossary" in _tool_calls(events) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert _tool_calls(events).get("docs__lookup_glossary") is True, events


def test_a_server_that_is_down_leaves_the_agent_ready_and_the_run_complete(
    make_stack: Any,
) -> None:
    down = f"http://{LOOPBACK}:{free_port()}/mcp"
    stack = make_stack(env=_servers(down))
    ready = httpx.get(f"http://{LOOPBACK}:{stack.config.research_port}/readyz")
    assert ready.status_code == 200, ready.text

    run, events = _run(stack, "How do Python generators work?")

    assert run["status"] == "succeeded", run
    finished = [e["data"] for e in events if e["event"] == "research.finished"]
    assert finished
    assert all(f.get("unavailable_tools") == ["mcp:docs"] for f in finished), finished
    assert not any(name.startswith("docs__") for name in _tool_calls(events))
