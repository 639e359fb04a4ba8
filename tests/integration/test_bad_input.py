"""Bad input gets a clear problem+json 4xx, never a 500."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podcrew_cli.stack import LOOPBACK, Stack
from podcrew_core.contracts.schemas import MAX_QUESTION_CHARS
from podcrew_core.runtime.serve import MAX_HEADER_BYTES

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


def _longest_question(clause: str) -> str:
    """A question of exactly the API's maximum length, made of `clause` repeated."""
    text = " ".join([clause] * (MAX_QUESTION_CHARS // len(clause) + 1))
    return text[: MAX_QUESTION_CHARS - 1] + "?"


@pytest.mark.parametrize(
    "clause",
    [
        # One clause the planner cannot split, and many it can.
        "why does the garbage collector of a python generator keep its frame alive",
        "how do python iterators work; what do generators add",
    ],
)
def test_a_question_of_the_maximum_length_is_planned_and_answered(runs: Any, clause: str) -> None:
    question = _longest_question(clause)
    assert len(question) == MAX_QUESTION_CHARS
    run = runs.wait_final(runs.submit(question))
    assert run["status"] == "succeeded", run["error"]
    assert run["result"]["report"]
    assert 2 <= len(run["sub_questions"]) <= 3


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


def _port(stack: Stack, service: str) -> int:
    ports = {
        "api": stack.config.api_port,
        "research-agent": stack.config.research_port,
        "writer-agent": stack.config.writer_port,
    }
    return ports[service]


def _peak_rss_bytes(pid: int) -> int:
    """The process's resident memory at its peak since `_reset_peak_rss` (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024


def _reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak := current resident size


_LIMIT = 256 * 1024  # every service's default max_body_bytes
_CHUNK = 64 * 1024
_MARGIN = 2 * 1024 * 1024  # a request's own allocations and the interpreter's slack


@pytest.mark.parametrize(
    ("service", "path"),
    [("api", "/v1/runs"), ("research-agent", "/v1/research"), ("writer-agent", "/v1/write")],
)
def test_a_chunked_body_over_the_limit_is_refused_without_reading_it(
    stack: Stack, service: str, path: str
) -> None:
    """No Content-Length to refuse by: the body (valid JSON, 128 times the limit) is cut
    off as it arrives, before authentication, and the process never holds it."""
    port = _port(stack, service)
    process = stack.services[service].process
    assert process is not None
    chunks = 128 * _LIMIT // _CHUNK

    def body() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(chunks):
            yield b"x" * _CHUNK
        yield b'"}'

    _reset_peak_rss(process.pid)
    before = _peak_rss_bytes(process.pid)
    with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=30.0) as client:
        response = client.post(path, content=body(), headers={"content-type": "application/json"})
    grown = _peak_rss_bytes(process.pid) - before

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/payload-too-large")
    assert grown < _LIMIT + _MARGIN, f"{service} grew by {grown} bytes"


@pytest.mark.parametrize("service", ["api", "research-agent", "writer-agent"])
def test_a_request_head_over_the_bound_gets_431_and_the_connection_closes(
    stack: Stack, service: str
) -> None:
    """A head that has not ended by the bound is refused there; a long but ordinary
    header is served."""
    port = _port(stack, service)
    with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", timeout=10.0) as client:
        assert client.get("/healthz", headers={"x-long": "a" * 16_000}).status_code == 200

    # One byte past the bound and no end of the head: refused without waiting for more.
    # (Sent exactly so: bytes still arriving after the server closes would reset the
    # connection and could discard its answer on the way back.)
    head = b"GET /healthz HTTP/1.1\r\nhost: podcrew\r\nx-endless: "
    with socket.create_connection((LOOPBACK, port), timeout=10.0) as sock:
        sock.sendall(head + b"a" * (MAX_HEADER_BYTES + 1 - len(head)))
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
