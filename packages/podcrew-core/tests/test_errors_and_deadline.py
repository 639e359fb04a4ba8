"""Errors become problem+json; deadlines travel as remaining milliseconds."""

from __future__ import annotations

import time

import pytest

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BadRequest, DeadlineExceeded, RunNotFound
from podcrew_core.contracts.schemas import Usage
from podcrew_core.runtime.http import RETRYABLE_STATUS, should_retry


def test_problem_document_has_stable_type_and_extras() -> None:
    problem = RunNotFound("no run with id 'x'", run_id="x").to_problem("/v1/runs/x")
    assert problem == {
        "type": "https://podcrew.dev/problems/run-not-found",
        "title": "Run not found",
        "status": 404,
        "detail": "no run with id 'x'",
        "instance": "/v1/runs/x",
        "run_id": "x",
    }


def test_deadline_round_trips_through_the_header() -> None:
    deadline = Deadline.after(2.0)
    received = Deadline.from_header(deadline.header_value(), default_s=99)
    assert 1.9 < received.remaining() <= 2.0
    assert Deadline.from_header(None, default_s=5).remaining() > 4.9


def test_deadline_refuses_work_that_cannot_finish() -> None:
    deadline = Deadline(time.monotonic() + 0.01)
    with pytest.raises(DeadlineExceeded):
        deadline.require(1.0, "research")
    with pytest.raises(BadRequest):
        Deadline.from_header("soon", default_s=1)


def test_retry_policy_is_a_pure_predicate() -> None:
    import httpx

    assert should_retry(httpx.ConnectError("refused"))
    assert not should_retry(httpx.ReadTimeout("slow"))
    assert not should_retry(ValueError("bug"))
    assert {408, 429, 500, 503} <= RETRYABLE_STATUS
    assert not {400, 401, 403, 404, 413, 422} & RETRYABLE_STATUS


def test_usage_adds_up() -> None:
    total = Usage(input_tokens=1, output_tokens=2, llm_calls=1) + Usage(
        input_tokens=10, cache_read_input_tokens=5, llm_calls=2
    )
    assert total == Usage(input_tokens=11, output_tokens=2, cache_read_input_tokens=5, llm_calls=3)
    assert total.total_tokens == 18
