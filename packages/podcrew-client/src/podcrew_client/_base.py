"""What the sync and async clients share: settings, request building, answer parsing.

Only the I/O differs between `Podcrew` and `AsyncPodcrew`; every request they send and
every answer they read goes through the functions here, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from podcrew_client._errors import error_from_response
from podcrew_core.contracts.hop import Priority
from podcrew_core.contracts.schemas import (
    FeedbackCreate,
    Run,
    RunAccepted,
    RunBudget,
    RunCreate,
    Tier,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
# Reads wait long: the server pings an event stream every 10 s, and `create(wait=...)` holds
# the answer until the run ends.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# How often `wait` polls a run: from the first value, growing, to the last.
POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S = 0.2, 1.5, 2.0

__all__ = ["Priority", "Tier"]


@dataclass(frozen=True)
class Request:
    """One API call, before it is sent."""

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] | None = None
    params: Mapping[str, Any] | None = None


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The base URL and key in force: the arguments, else PODCREW_BASE_URL and
    PODCREW_API_KEY, else the local stack's address and no key."""
    url = base_url or os.environ.get("PODCREW_BASE_URL") or DEFAULT_BASE_URL
    key = api_key if api_key is not None else os.environ.get("PODCREW_API_KEY") or None
    return url.rstrip("/"), key


def default_headers(api_key: str | None) -> dict[str, str]:
    """Headers on every request: the key as a bearer token, when there is one."""
    headers = {"User-Agent": "podcrew-client/0.1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def create_request(
    question: str,
    *,
    idempotency_key: str | None,
    wait: float | None,
    **fields: Any,
) -> Request:
    """`POST /v1/runs`. The body is validated here (a bad field fails before any request);
    the Idempotency-Key is made once, so every retry of this submission names the same run
    and the server creates it at most once."""
    given = {k: v for k, v in fields.items() if v is not None}
    if isinstance(given.get("budget"), Mapping):
        given["budget"] = RunBudget(**given["budget"])
    body = RunCreate(question=question, **given).model_dump(mode="json", exclude_unset=True)
    key = idempotency_key or f"podcrew-client-{uuid.uuid4()}"
    params = {"wait": wait} if wait else None
    return Request("POST", "/v1/runs", body, {"Idempotency-Key": key}, params)


def estimate_request(question: str, **fields: Any) -> Request:
    """`POST /v1/estimate` for the run these fields describe."""
    body = RunCreate(question=question, **{k: v for k, v in fields.items() if v is not None})
    return Request("POST", "/v1/estimate", body.model_dump(mode="json", exclude_unset=True))


def feedback_request(run_id: str, score: int, **fields: Any) -> Request:
    """`POST /v1/runs/{id}/feedback`."""
    body = FeedbackCreate(score=score, **{k: v for k, v in fields.items() if v is not None})
    return Request(
        "POST", f"/v1/runs/{run_id}/feedback", body.model_dump(mode="json", exclude_unset=True)
    )


def checked(response: httpx.Response) -> httpx.Response:
    """The response, or the error its problem+json stands for (its body already read)."""
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def created(response: httpx.Response) -> Run | RunAccepted:
    """What `POST /v1/runs` answered: the finished run, or its id and status."""
    payload = response.json()
    return (
        Run.model_validate(payload)
        if "question" in payload
        else (RunAccepted.model_validate(payload))
    )


def poll_delays() -> Iterator[float]:
    """The waits between polls of a run: short at first, then every POLL_MAX_S."""
    delay = POLL_FIRST_S
    while True:
        yield delay
        delay = min(delay * POLL_GROWTH, POLL_MAX_S)
