"""`podcrew ask`: submit a question and follow it live, driven by the run's SSE events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from podcrew_client import (
    APIConnectionError,
    Podcrew,
    PodcrewError,
    RateLimited,
    RunStatus,
    Unauthorized,
)


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


def ask(
    api_url: str,
    question: str,
    console: Console,
    timeout_s: float = 300.0,
    api_key: str | None = None,
) -> int:
    """Submit, show progress until the run ends, print the report; exit code 0 on success.

    What stops it before a run ends (no stack at `api_url`, a refused key, a rate limit, a
    rejected question) is one line on the console and exit code 2, never a traceback."""
    try:
        with Podcrew(base_url=api_url, api_key=api_key) as client:
            return _follow(client, question, console, timeout_s)
    except PodcrewError as exc:
        console.print(Text(f"podcrew ask: {explain(exc)}", style="red"), soft_wrap=True)
        return 2


def explain(error: PodcrewError) -> str:
    """One line that says what went wrong and what to do about it."""
    if isinstance(error, APIConnectionError):
        return f"{error.detail} (is the stack running? `podcrew up` starts one)"
    if isinstance(error, Unauthorized):
        return f"the API refused the key ({error.detail}); pass --api-key or set PODCREW_API_KEY"
    if isinstance(error, RateLimited):
        wait = error.headers.get("Retry-After")
        return f"rate limited: {error.detail}" + (f"; try again in {wait} s" if wait else "")
    return f"{error.title} ({error.status}): {error.detail}"


def _follow(client: Podcrew, question: str, console: Console, timeout_s: float) -> int:
    run_id = client.runs.create(question=question).id
    progress = Progress(question)
    deadline = time.monotonic() + timeout_s
    with Live(progress.render(), console=console, refresh_per_second=10, transient=False) as live:
        for event in client.runs.stream(run_id):
            progress.apply(str(event.type), event.data)
            live.update(progress.render())
            if time.monotonic() > deadline:
                break
    run = client.runs.get(run_id)
    if run.status is not RunStatus.SUCCEEDED or run.result is None:
        detail = run.error.detail if run.error else progress.error or "unknown"
        console.print(Text(f"run {run_id} {run.status.value}: {detail}", style="red"))
        return 1
    console.print()
    console.print(Markdown(run.result.report))
    usage = run.usage
    console.print(
        f"[dim]run {run_id}: {usage.llm_calls} LLM calls, "
        f"{usage.input_tokens} input + {usage.output_tokens} output tokens[/dim]"
    )
    return 0
