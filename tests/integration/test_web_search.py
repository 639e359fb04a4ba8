"""The real stack with web search on: the research agents ask a SearXNG instance (a loopback
server speaking SearXNG's JSON API, in its own process) and the report cites a web page it
returned, next to the knowledge base."""

from __future__ import annotations

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

from podcrew_cli.stack import LOOPBACK, free_port

pytestmark = pytest.mark.integration

SERVER = Path(__file__).resolve().parents[1] / "servers" / "search_providers.py"
PAGE = "https://quibbler.example.org/handbook/maintenance"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the search provider server exited"
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture
def searxng() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "searxng", "--port", str(port)])
    try:
        _wait_for_port(port, process)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_report_cites_a_web_search_result(make_stack: Any, searxng: str) -> None:
    stack = make_stack(
        env={
            "PODCREW_RESEARCH_WEB_SEARCH_PROVIDER": "searxng",
            "PODCREW_RESEARCH_WEB_SEARCH_URL": searxng,
        }
    )
    with httpx.Client(base_url=stack.config.api_url, timeout=60.0) as client:
        response = client.post(
            "/v1/runs?wait=45", json={"question": "How often must the quibbler be recalibrated?"}
        )
        assert response.status_code == 200, response.text
        run = response.json()
    assert run["status"] == "succeeded", run

    result = run["result"]
    cited = {int(n) for n in re.findall(r"(?<!\S)\[(\d+)\]", result["report"])}
    sources = {s["number"]: s["source"] for s in result["sources"]}
    web = [n for n, source in sources.items() if source["id"] == PAGE]
    assert web and web[0] in cited, result
    assert sources[web[0]] == {"id": PAGE, "title": "Quibbler maintenance handbook", "url": PAGE}
    assert "recalibrated every ninety days" in result["report"]

    metrics = httpx.get(f"http://{LOOPBACK}:{stack.config.research_port}/metrics").text
    assert re.search(
        r'podcrew_tool_calls_total\{outcome="ok",tool="web_search"\} [1-9]', metrics
    ), metrics
    assert 'podcrew_web_search_requests_total{outcome="ok",provider="searxng"}' in metrics
