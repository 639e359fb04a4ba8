"""Bad input gets a clear problem+json 4xx, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"question": ""}, 422, "validation-failed"),
        ({"question": "   "}, 422, "validation-failed"),
        ({"question": "x" * 4001}, 422, "validation-failed"),
        ({}, 422, "validation-failed"),
        ({"question": 42}, 422, "validation-failed"),
        ({"question": "What is Python?", "surprise": True}, 422, "validation-failed"),
        ({"question": "What is Python?", "max_subquestions": 9}, 422, "validation-failed"),
        # Numbers are strict: a string or a boolean is not a number, whatever it spells.
        ({"question": "What is Python?", "max_subquestions": "3"}, 422, "validation-failed"),
        ({"question": "What is Python?", "max_subquestions": True}, 422, "validation-failed"),
        ({"question": "What is Python?", "budget": {"max_tokens": "10"}}, 422, "validation-failed"),
        ({"question": "What is Python?", "budget": {"max_tokens": True}}, 422, "validation-failed"),
        ({"question": "What is Python?", "budget": {"deadline_s": "30"}}, 422, "validation-failed"),
        (
            {"question": "What is Python?", "budget": {"max_cost_usd": False}},
            422,
            "validation-failed",
        ),
        (["a list"], 422, "validation-failed"),
    ],
)
def test_invalid_bodies(runs: Any, body: Any, status: int, slug: str) -> None:
    response = runs.http.post("/v1/runs", json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/" + slug)
    assert problem["status"] == status
    assert problem["detail"]


def test_malformed_json(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/malformed-json")


def test_wrong_content_type(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs",
        content=b"question=hi",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


def test_oversized_body(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs",
        content=b'{"question": "' + b"x" * 300_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("path", ["/v1/runs/run_nope", "/v1/runs/run_nope/events"])
def test_unknown_run(runs: Any, path: str) -> None:
    response = runs.http.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/run-not-found")


def test_unknown_run_cancel_and_bad_wait(runs: Any) -> None:
    assert runs.http.delete("/v1/runs/run_nope").status_code == 404
    response = runs.http.post("/v1/runs?wait=-1", json={"question": "What is Python?"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


def test_unknown_route_and_method(runs: Any) -> None:
    assert runs.http.get("/v2/nothing").headers["content-type"] == PROBLEM
    response = runs.http.put("/v1/runs")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == "POST"  # what the path does take


@pytest.mark.parametrize(
    "key", [b"has space", "é".encode(), b"x" * 201, b"tab\there", b'"quoted" key']
)
def test_a_malformed_idempotency_key_is_refused(runs: Any, key: bytes) -> None:
    """The key becomes part of a Redis key name: only printable ASCII, at most 200, gets in."""
    response = runs.http.post(
        "/v1/runs", json={"question": "What is Python?"}, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/validation-failed")


@pytest.mark.parametrize("thread_id", ["a:b", "*", "{x}", "t" * 129, "é", "a b", ""])
def test_a_malformed_thread_id_is_refused(runs: Any, thread_id: str) -> None:
    response = runs.http.post(
        "/v1/runs", json={"question": "What is Python?", "thread_id": thread_id}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/validation-failed")
