"""`POST /v1/write/stream` through the real app: a failure reaches the caller as a problem,
in the stream's `error` event as in any answer, and says the retries the hop spent."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from podcrew_cli.stack import free_port
from podcrew_core.contracts.errors import LLMError, LLMOverloaded, LLMRejected
from podcrew_core.contracts.problem import from_problem
from podcrew_core.llm import LLMRequest, LLMResponse
from podcrew_core.llm.resilient import ResilientProvider
from podcrew_core.llm.types import StreamEvent
from podcrew_core.runtime.resilience import CircuitBreaker
from podcrew_core.runtime.settings import RedisSettings
from podcrew_writer.main import create_app
from podcrew_writer.settings import WriterConfig, WriterSettings

BODY: dict[str, Any] = {
    "run_id": "run-1",
    "question": "How do Python generators work?",
    "sections": [
        {
            "sub_question": "How do generators yield values?",
            "findings": [{"claim": "They yield.", "source": {"id": "kb:1", "title": "T"}}],
        }
    ],
}


class Failing:
    """A model whose streams fail with `errors`, in order."""

    name = "failing"

    def __init__(self, *errors: LLMError) -> None:
        self.errors = list(errors)

    async def complete(self, request: LLMRequest) -> LLMResponse:  # pragma: no cover - unused
        raise NotImplementedError

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        raise self.errors.pop(0)
        yield  # pragma: no cover - makes this a generator

    async def aclose(self) -> None:
        return None


@pytest.fixture
def client() -> Iterator[TestClient]:
    # A port nothing listens on: no budget header is sent, so no Redis is needed.
    redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(WriterConfig(service=WriterSettings(), redis=redis))) as test_client:
        yield test_client


def _events(client: TestClient, headers: dict[str, str]) -> list[tuple[str, str]]:
    response = client.post("/v1/write/stream", json=BODY, headers=headers)
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.split("\r\n\r\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], fields["data"]))
    return events


def test_a_failure_in_the_stream_is_a_problem_that_keeps_its_meaning(
    client: TestClient,
) -> None:
    # Two overloaded attempts are retried within the hop's retry budget, then the model
    # refuses the request: the caller reads that refusal, not retryable, and the two
    # retries the writer spent.
    provider = ResilientProvider(
        Failing(*[LLMOverloaded("busy", retry_after_s=0.0)] * 2, LLMRejected("too long")),
        CircuitBreaker(upstream="test-writer", consecutive_failures=100, min_calls=100),
        max_attempts=5,
        rng=random.Random(1),
    )
    state = client.app.state  # type: ignore[attr-defined]
    state.resources = dataclasses.replace(state.resources, provider=provider)

    (event,) = _events(client, {"x-podcrew-retry-budget": "5", "x-podcrew-deadline-ms": "30000"})

    kind, data = event
    assert kind == "error"
    problem = orjson.loads(data)
    assert problem["retryable"] is False and problem["retries"] == 2
    error = from_problem(None, data)
    assert isinstance(error, LLMRejected)
    assert (error.status, error.detail) == (502, "too long")
