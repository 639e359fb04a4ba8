"""The client against a scripted API (httpx.MockTransport): what a caller observes of
retries, idempotency keys, errors by meaning and resumed event streams."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from podcrew_client import (
    APIConnectionError,
    AsyncPodcrew,
    EventType,
    Podcrew,
    RateLimited,
    RunAccepted,
    RunNotFound,
    Unauthorized,
)

PROBLEM = "https://podcrew.dev/problems/"
Handler = Callable[[httpx.Request], httpx.Response]


def _problem(status: int, slug: str, **headers: str) -> httpx.Response:
    body = {"type": PROBLEM + slug, "title": slug, "status": status, "detail": f"{slug}!"}
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **headers}
    )


def _client(handler: Handler, **kwargs: Any) -> Podcrew:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return Podcrew(base_url="http://podcrew.test", http_client=http, **kwargs)


def test_a_rate_limited_create_is_retried_after_retry_after_with_the_same_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PODCREW_API_KEY", "k-123")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return _problem(429, "rate-limited", **{"Retry-After": "0"})
        return httpx.Response(202, json={"id": "r1", "status": "queued"})

    accepted = _client(handler).runs.create(question="How do generators work?")

    assert accepted == RunAccepted(id="r1", status="queued")  # type: ignore[arg-type]
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 2 and len(keys) == 1 and next(iter(keys)).startswith("podcrew-client-")
    assert {r.headers["Authorization"] for r in seen} == {"Bearer k-123"}
    assert json.loads(seen[0].content) == {"question": "How do generators work?"}


def test_two_creates_carry_different_keys() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(202, json={"id": f"r{len(keys)}", "status": "queued"})

    client = _client(handler)
    client.runs.create(question="first question")
    client.runs.create(question="first question")
    assert len(set(keys)) == 2


def test_each_problem_type_is_its_own_exception() -> None:
    answers = {
        "/v1/runs/nope": _problem(404, "run-not-found"),
        "/v1/runs/locked": _problem(401, "unauthorized"),
        "/v1/runs/busy": _problem(429, "rate-limited", **{"Retry-After": "7"}),
    }
    client = _client(lambda r: answers[r.url.path], max_retries=0)
    with pytest.raises(RunNotFound, match="run-not-found!"):
        client.runs.get("nope")
    with pytest.raises(Unauthorized):
        client.runs.get("locked")
    with pytest.raises(RateLimited) as limited:
        client.runs.get("busy")
    assert limited.value.headers == {"Retry-After": "7"}


def test_a_stack_that_is_not_there_is_a_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(APIConnectionError, match=r"cannot reach podcrew at http://podcrew\.test"):
        _client(handler, max_retries=1).runs.get("r1")


def _sse(*events: tuple[str | None, str, dict[str, Any]]) -> str:
    lines = []
    for event_id, kind, data in events:
        lines += [f"id: {event_id}"] if event_id else []
        lines += [f"event: {kind}", f"data: {json.dumps(data)}", ""]
    return "\n".join(lines) + "\n"


EVENTS = [
    ("1-0", "run.queued", {}),
    ("2-0", "run.started", {}),
    ("3-0", "run.planned", {"sub_questions": ["a?", "b?"]}),
    ("4-0", "run.succeeded", {}),
]


def _streaming_api(asked: list[str | None]) -> Handler:
    """First connection: two events, then the server's goodbye; second: the connection is
    lost; third: one event the client already has, then the rest."""

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        if len(asked) == 2:
            raise httpx.ReadError("connection reset", request=request)
        closing = (None, "stream.closing", {"reason": "server shutting down", "resume": True})
        body = _sse(*EVENTS[:2], closing) if len(asked) == 1 else _sse(*EVENTS[1:])
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    return handler


def test_a_stream_resumes_after_closing_and_a_lost_connection_without_gap_or_repeat() -> None:
    asked: list[str | None] = []
    events = list(_client(_streaming_api(asked)).runs.stream("r1"))
    assert [(e.id, e.type) for e in events] == [(i, EventType(t)) for i, t, _ in EVENTS]
    assert events[2].data == {"sub_questions": ["a?", "b?"]} and events[-1].terminal
    assert asked == [None, "2-0", "2-0"]


async def test_the_async_client_creates_waits_and_streams() -> None:
    asked: list[str | None] = []
    stream = _streaming_api(asked)
    run = {
        "id": "r1",
        "status": "succeeded",
        "question": "q??",
        "budget": {"max_tokens": 10, "max_cost_usd": 1.0, "deadline_s": 5.0},
        "created_at": "2026-01-01T00:00:00Z",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return stream(request)
        if request.method == "POST":
            return httpx.Response(202, json={"id": "r1", "status": "queued"})
        return httpx.Response(200, json=run)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with AsyncPodcrew(base_url="http://podcrew.test/", http_client=http) as client:
        accepted = await client.runs.create(question="q??")
        finished = await client.runs.wait(accepted.id, timeout=5)
        events = [e async for e in client.runs.stream(accepted.id)]
    assert finished.status == "succeeded"
    assert [e.id for e in events] == ["1-0", "2-0", "3-0", "4-0"]
