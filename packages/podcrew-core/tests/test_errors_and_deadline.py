"""Errors become problem+json; deadlines travel as remaining milliseconds."""

from __future__ import annotations

import time

import pytest

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BadRequest, DeadlineExceeded, RunNotFound
from podcrew_core.contracts.problem import to_problem
from podcrew_core.contracts.schemas import Usage


def test_problem_document_has_stable_type_and_extras() -> None:
    problem = to_problem(RunNotFound("no run with id 'x'", run_id="x"), "/v1/runs/x")
    assert problem == {
        "type": "https://podcrew.dev/problems/run-not-found",
        "title": "Run not found",
        "status": 404,
        "detail": "no run with id 'x'",
        "retryable": False,
        "instance": "/v1/runs/x",
        "run_id": "x",
    }


def test_deadline_round_trips_as_milliseconds() -> None:
    deadline = Deadline.after(2.0)
    received = Deadline.from_ms(deadline.remaining_ms(), "x-podcrew-deadline-ms")
    assert 1.9 < received.remaining() <= 2.0
    assert Deadline(time.monotonic() - 5).remaining_ms() == "0"


def test_deadline_refuses_work_that_cannot_finish() -> None:
    deadline = Deadline(time.monotonic() + 0.01)
    with pytest.raises(DeadlineExceeded):
        deadline.require(1.0, "research")
    with pytest.raises(BadRequest, match="x-podcrew-deadline-ms"):
        Deadline.from_ms("soon", "x-podcrew-deadline-ms")


def test_usage_adds_up() -> None:
    total = Usage(input_tokens=1, output_tokens=2, llm_calls=1) + Usage(
        input_tokens=10, cache_read_input_tokens=5, llm_calls=2
    )
    assert total == Usage(input_tokens=11, output_tokens=2, cache_read_input_tokens=5, llm_calls=3)
    assert total.total_tokens == 18
