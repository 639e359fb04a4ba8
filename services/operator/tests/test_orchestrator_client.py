"""The orchestrator API client: what it sends, and every answer mapped to a meaning."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from podcrew_core.contracts.errors import PROBLEM_BASE, DeadlineExceeded
from podcrew_core.contracts.problem import to_problem
from podcrew_core.contracts.schemas import ResolvedBudget, Run, RunCreate, RunStatus
from podcrew_operator.clients.orchestrator import OrchestratorClient, create_http_client
from podcrew_operator.errors import (
    OrchestratorRejected,
    OrchestratorUnauthorized,
    OrchestratorUnavailable,
    RunLost,
)
from podcrew_operator.settings import OperatorSettings

BODY = RunCreate(question="What is a generator?")


def client(
    handler: Callable[[httpx.Request], httpx.Response], **settings: Any
) -> OrchestratorClient:
    http = create_http_client(OperatorSettings(api_url="http://api.test", **settings))
    http._transport = httpx.MockTransport(handler)
    return OrchestratorClient(http)


def run_json(status: str = "running") -> dict[str, Any]:
    return Run(
        id="run_1",
        status=RunStatus(status),
        question="What?",
        budget=ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        created_at=datetime.now(UTC),
    ).model_dump(mode="json")


async def test_submit_sends_the_key_the_body_and_the_api_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "run_1", "status": "queued"})

    submitted = await client(handler, api_key="k-123").submit(BODY, "agentrun-uid")
    assert (submitted.run_id, submitted.status) == ("run_1", RunStatus.QUEUED)
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/v1/runs"
    assert request.headers["Idempotency-Key"] == "agentrun-uid"
    assert request.headers["Authorization"] == "Bearer k-123"
    assert RunCreate.model_validate_json(request.content) == BODY


async def test_a_replayed_finished_run_is_read_from_the_full_body() -> None:
    done = run_json("succeeded")
    submitted = await client(lambda r: httpx.Response(200, json=done)).submit(BODY, "k")
    assert submitted.status is RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("response", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "slow down"}), 7.0),
        (httpx.Response(503, headers={"Retry-After": "2"}), 2.0),
        (httpx.Response(502), None),
        (httpx.Response(408), None),
        (
            httpx.Response(
                409,
                json={"detail": "this Idempotency-Key names a run that is being created; retry"},
            ),
            1.0,
        ),
    ],
)
async def test_what_can_pass_is_retryable_with_the_servers_advice(
    response: httpx.Response, retry_after: float | None
) -> None:
    with pytest.raises(OrchestratorUnavailable) as caught:
        await client(lambda r: response).submit(BODY, "k")
    assert caught.value.retry_after_s == retry_after


async def test_unreachable_and_unauthorized_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(OrchestratorUnavailable, match="unreachable"):
        await client(refuse).submit(BODY, "k")
    with pytest.raises(OrchestratorUnauthorized):
        await client(lambda r: httpx.Response(401)).get("run_1")


@pytest.mark.parametrize("status", [400, 409, 413, 422])
async def test_a_refused_run_is_not_retried(status: int) -> None:
    with pytest.raises(OrchestratorRejected) as caught:
        await client(lambda r: httpx.Response(status, json={"detail": "no"})).submit(BODY, "k")
    assert caught.value.status == status


async def test_get_and_cancel() -> None:
    assert (await client(lambda r: httpx.Response(200, json=run_json())).get("run_1")).id == "run_1"
    with pytest.raises(RunLost):
        await client(lambda r: httpx.Response(404)).get("run_1")
    assert await client(lambda r: httpx.Response(200, json=run_json("cancelled"))).cancel("run_1")
    assert not await client(lambda r: httpx.Response(409)).cancel("run_1")  # already over
    assert not await client(lambda r: httpx.Response(404)).cancel("run_1")
    with pytest.raises(OrchestratorUnavailable):
        await client(lambda r: httpx.Response(500)).cancel("run_1")


async def test_the_apis_problem_says_whether_to_retry() -> None:
    # A 5xx that cannot pass is refused for good; a 4xx the API marks retryable is retried:
    # the problem's verdict, read by podcrew's codec, not the status alone.
    late = DeadlineExceeded("the orchestrator ran out of time")
    with pytest.raises(OrchestratorRejected, match="ran out of time") as refused:
        await client(lambda r: httpx.Response(504, json=to_problem(late))).cancel("run_1")
    assert refused.value.status == 504

    limited = {
        "type": PROBLEM_BASE + "rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "tenant acme sent too many runs",
        "retryable": True,
    }
    answer = httpx.Response(429, json=limited, headers={"Retry-After": "3"})
    with pytest.raises(OrchestratorUnavailable, match="too many runs") as told:
        await client(lambda r: answer).submit(BODY, "k")
    assert told.value.retry_after_s == 3.0
