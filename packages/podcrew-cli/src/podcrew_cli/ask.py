"""`podcrew ask`: submit a question and follow it live, driven by the run's SSE events."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

_RECONNECTS = 5


@dataclass
class Progress:
    """What the terminal shows, folded from the run's events."""

    question: str
    status: str = "queued"
    sub_questions: list[str] = field(default_factory=list)
    research: dict[int, str] = field(default_factory=dict)
    tools: dict[int, int] = field(default_factory=dict)
    written: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def apply(self, event: str, data: dict[str, Any]) -> None:
        index = int(data.get("index", -1))
        if event == "run.started":
            self.status = "running"
        elif event == "run.planned":
            self.sub_questions = list(data.get("sub_questions", []))
            self.research = dict.fromkeys(range(len(self.sub_questions)), "waiting")
        elif event == "research.started":
            self.research[index] = "researching"
        elif event == "tool.called":
            self.tools[index] = self.tools.get(index, 0) + 1
        elif event == "research.finished":
            self.research[index] = "done" if data.get("ok") else f"failed: {data.get('detail', '')}"
        elif event == "writer.started":
            self.status = "writing"
        elif event == "writer.delta":
            self.written += len(data.get("text", ""))
        elif event in ("run.succeeded", "run.failed", "run.cancelled"):
            self.status = event.removeprefix("run.")
            error = data.get("error")
            self.error = error.get("detail") if isinstance(error, dict) else data.get("reason")

    def render(self) -> Group:
        elapsed = time.monotonic() - self.started
        header = Text.assemble(
            ("podcrew ", "bold magenta"),
            (self.question, "bold"),
            f"  [{self.status}, {elapsed:.1f}s]",
        )
        table = Table(show_header=True, header_style="bold", expand=True, box=None)
        table.add_column("#", width=3)
        table.add_column("sub-question")
        table.add_column("tools", width=6)
        table.add_column("state", width=24)
        for i, sub in enumerate(self.sub_questions):
            state = self.research.get(i, "waiting")
            cell: Spinner | Text = (
                Spinner("dots", text=state)
                if state == "researching"
                else Text(
                    state,
                    style="green"
                    if state == "done"
                    else "red"
                    if state.startswith("failed")
                    else "dim",
                )
            )
            table.add_row(str(i + 1), sub, str(self.tools.get(i, 0)), cell)
        parts: list[Any] = [header]
        if self.sub_questions:
            parts.append(table)
        else:
            parts.append(Spinner("dots", text="planning…"))
        if self.status == "writing":
            parts.append(Spinner("dots", text=f"writing the report ({self.written} characters)"))
        return Group(*parts)


def ask(api_url: str, question: str, console: Console, timeout_s: float = 300.0) -> int:
    """Submit, show progress until the run ends, print the report; exit code 0 on success."""
    with httpx.Client(base_url=api_url, timeout=httpx.Timeout(30.0, read=60.0)) as client:
        response = client.post("/v1/runs", json={"question": question})
        if response.status_code >= 400:
            console.print(f"[red]rejected ({response.status_code}):[/red] {response.text}")
            return 2
        run_id = response.json()["id"]
        progress = Progress(question)
        last_id: str | None = None
        deadline = time.monotonic() + timeout_s
        with Live(
            progress.render(), console=console, refresh_per_second=10, transient=False
        ) as live:
            for _ in range(_RECONNECTS):
                headers = {"Last-Event-ID": last_id} if last_id else {}
                try:
                    with connect_sse(
                        client, "GET", f"/v1/runs/{run_id}/events", headers=headers
                    ) as source:
                        for sse in source.iter_sse():
                            last_id = sse.id or last_id
                            progress.apply(sse.event, json.loads(sse.data) if sse.data else {})
                            live.update(progress.render())
                            if progress.status in ("succeeded", "failed", "cancelled"):
                                break
                except httpx.HTTPError:
                    pass  # resume from last_id: the events stream keeps everything
                if (
                    progress.status in ("succeeded", "failed", "cancelled")
                    or time.monotonic() > deadline
                ):
                    break
        run = client.get(f"/v1/runs/{run_id}").json()
    if run["status"] != "succeeded":
        detail = (run.get("error") or {}).get("detail", progress.error or "unknown")
        console.print(f"[red]run {run_id} {run['status']}:[/red] {detail}")
        return 1
    console.print()
    console.print(Markdown(run["result"]["report"]))
    usage = run["usage"]
    console.print(
        f"[dim]run {run_id}: {usage['llm_calls']} LLM calls, "
        f"{usage['input_tokens']} input + {usage['output_tokens']} output tokens[/dim]"
    )
    return 0
