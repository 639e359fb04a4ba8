"""The terminal progress view folds run events into per-sub-question state."""

from __future__ import annotations

from rich.console import Console

from podcrew_cli.ask import Progress


def test_progress_follows_the_events() -> None:
    progress = Progress("Q?")
    progress.apply("run.started", {})
    progress.apply("run.planned", {"sub_questions": ["A?", "B?"]})
    progress.apply("research.started", {"index": 0})
    progress.apply("research.started", {"index": 1})
    progress.apply("tool.called", {"index": 0, "name": "kb_search"})
    progress.apply("research.finished", {"index": 0, "ok": True})
    progress.apply("research.finished", {"index": 1, "ok": False, "detail": "timeout"})
    progress.apply("writer.started", {})
    progress.apply("writer.delta", {"text": "hello"})
    assert progress.research == {0: "done", 1: "failed: timeout"}
    assert progress.tools == {0: 1}
    assert progress.status == "writing" and progress.written == 5
    console = Console(record=True, width=100)
    console.print(progress.render())
    screen = console.export_text()
    assert "A?" in screen and "failed: timeout" in screen and "5 characters" in screen
    progress.apply("run.failed", {"error": {"type": "x", "detail": "boom"}})
    assert progress.status == "failed" and progress.error == "boom"
