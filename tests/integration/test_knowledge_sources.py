"""The real stack pointed at a user's own documents (as `podcrew up --kb DIR` points it): the
report cites chunks of those files by path and section, and a file added while the stack
runs is searched without a restart."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

RUNBOOK = """# Zorblax runbook

## Restarting the zorblax

Restart the zorblax service with `zorblaxctl restart`; the zorblax drains its queue for
thirty seconds before it stops.

## Zorblax alerts

A zorblax alert pages the on-call engineer when the zorblax queue is older than ten minutes.
"""
FAQ = """<html><head><title>Zorblax FAQ</title></head><body>
<h1>Zorblax FAQ</h1>
<h2 id="licence">Zorblax licence</h2><p>The zorblax licence key is renewed every January.</p>
</body></html>"""


def _ask(api_url: str, question: str) -> dict[str, Any]:
    with httpx.Client(base_url=api_url, timeout=60.0) as client:
        response = client.post("/v1/runs?wait=45", json={"question": question})
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
    assert run["status"] == "succeeded", run
    return run


def _cited(run: dict[str, Any], required: bool = True) -> list[str]:
    result = run["result"]
    numbers = {int(n) for n in re.findall(r"(?<!\S)\[(\d+)\]", result["report"])}
    assert numbers or not required, "the report cites nothing"
    return [s["source"]["id"] for s in result["sources"] if s["number"] in numbers]


def test_reports_cite_the_users_files_and_see_new_ones_without_restart(
    make_stack: Any, tmp_path: Path
) -> None:
    docs = tmp_path / "team-docs"
    docs.mkdir()
    (docs / "runbook.md").write_text(RUNBOOK, encoding="utf-8")
    (docs / "faq.html").write_text(FAQ, encoding="utf-8")
    stack = make_stack(
        env={
            "PODCREW_RESEARCH_KB_SOURCES": str(docs),
            "PODCREW_RESEARCH_KB_REFRESH_INTERVAL_S": "0.2",
        }
    )

    run = _ask(stack.config.api_url, "How do I restart the zorblax and what do its alerts mean?")

    cited = _cited(run)
    known = {
        "kb:runbook.md#zorblax-runbook",
        "kb:runbook.md#restarting-the-zorblax",
        "kb:runbook.md#zorblax-alerts",
        "kb:faq.html#licence",
    }
    assert set(cited) <= known, cited
    assert "kb:runbook.md#restarting-the-zorblax" in cited
    titles = {s["source"]["title"] for s in run["result"]["sources"]}
    assert "Zorblax runbook > Restarting the zorblax" in titles
    assert "runbook.md#restarting-the-zorblax" in run["result"]["report"]

    (docs / "upgrades.md").write_text(
        "# Upgrades\n\n## Quibbler upgrade\n\nUpgrade the quibbler only on Tuesdays after "
        "the quibbler backup finishes.\n",
        encoding="utf-8",
    )
    deadline = time.monotonic() + 30
    for attempt in range(1, 100):
        # Worded anew each time: a repeated question could be answered from the result cache.
        question = f"When may the quibbler upgrade happen (attempt {attempt})?"
        # Until the new file is indexed, nothing relevant is found and nothing is cited.
        cited = _cited(_ask(stack.config.api_url, question), required=False)
        if "kb:upgrades.md#quibbler-upgrade" in cited or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "kb:upgrades.md#quibbler-upgrade" in cited
    assert stack.services["research-agent"].running
