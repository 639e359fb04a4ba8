"""The AgentRun spec as the operator reads it, and the run request it becomes."""

from __future__ import annotations

import pytest

from podcrew_operator.errors import InvalidSpec
from podcrew_operator.resource import (
    MAX_NAME_CHARS,
    AgentRunSpec,
    idempotency_key,
    parse_spec,
    report_config_map_name,
)


def test_a_full_spec_becomes_the_run_request() -> None:
    spec, request = parse_spec(
        {
            "question": "  How do generators work?  ",
            "threadId": "t-1",
            "model": "premium",
            "budget": {"tokens": 1000, "costUsd": 0.25, "deadlineSeconds": 120},
            "ttlSecondsAfterFinished": 60,
            "output": {"configMapName": "answer"},
        }
    )
    assert request.question == "How do generators work?"  # the api's own stripping
    assert request.tier == "premium" and request.thread_id == "t-1"
    assert request.budget.max_tokens == 1000
    assert request.budget.max_cost_usd == 0.25
    assert request.budget.deadline_s == 120
    assert spec.ttl_seconds_after_finished == 60


def test_defaults_leave_limits_to_the_server() -> None:
    _, request = parse_spec({"question": "What is a coroutine?"})
    assert request.tier == "standard"
    assert request.budget.model_dump() == {
        "max_tokens": None,
        "max_cost_usd": None,
        "deadline_s": None,
    }
    # Unset fields are not sent, so the server's defaults apply.
    assert request.model_dump_json(exclude_none=True).count("null") == 0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"question": "   ab "}, "question"),
        ({"question": "What?", "threadId": "has space"}, "thread_id"),
        ({"question": "What is it?", "model": "huge"}, "model"),
        ({"question": "What is it?", "budget": {"costUsd": 0}}, "costUsd"),
        ({"question": "What is it?", "surprise": 1}, "surprise"),
        ({}, "question"),
    ],
)
def test_invalid_specs_say_which_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpec, match=field):
        parse_spec(spec)


def test_the_idempotency_key_is_the_objects_uid() -> None:
    assert idempotency_key("1b4e28ba-2fa1-11d2-883f-0016d3cca427") == (
        "agentrun-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    )
    assert idempotency_key("a") != idempotency_key("b")


def test_report_configmap_name() -> None:
    plain = AgentRunSpec(question="What is it?")
    assert report_config_map_name("q1", plain) == "q1-report"
    named = AgentRunSpec.model_validate({"question": "What?", "output": {"configMapName": "x"}})
    assert report_config_map_name("q1", named) == "x"
    long = report_config_map_name("a" * 250 + "-b", plain)
    assert len(long) <= MAX_NAME_CHARS and long.endswith("-report") and "--" not in long
