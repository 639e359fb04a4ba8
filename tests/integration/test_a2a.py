"""podcrew as an A2A agent, driven by the official a2a-sdk client against the real stack: the
Agent Card, a message that becomes a run and completes with the report artifact, the run's
events as a stream of task updates, get and cancel, and the public API's authentication."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from a2a.client import A2AClientError, Client, ClientConfig, create_client
from a2a.helpers.proto_helpers import get_data_parts
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
)

from podcrew_cli.stack import Stack

from .conftest import keyed_stack

pytestmark = pytest.mark.integration

ACME, GLOBEX = "acme-a2a-0123456789", "globex-a2a-0123456789"


@pytest.fixture(scope="module")
def stack_with_keys() -> Iterator[Stack]:
    with keyed_stack(
        {ACME: "acme", GLOBEX: "globex"}, PODCREW_LLM_OFFLINE_LATENCY_S="0.2"
    ) as stack:
        yield stack


async def _client(stack: Stack, key: str, *, streaming: bool) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=120) as http:
        config = ClientConfig(streaming=streaming, httpx_client=http)
        client = await create_client(stack.config.api_url, client_config=config)
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture
async def acme(stack_with_keys: Stack) -> AsyncIterator[Client]:
    async for client in _client(stack_with_keys, ACME, streaming=False):
        yield client


@pytest.fixture
async def acme_streaming(stack_with_keys: Stack) -> AsyncIterator[Client]:
    async for client in _client(stack_with_keys, ACME, streaming=True):
        yield client


def _ask(question: str, *, now: bool = False) -> SendMessageRequest:
    message = Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=question)])
    return SendMessageRequest(
        message=message, configuration=SendMessageConfiguration(return_immediately=now)
    )


def _question() -> str:
    return f"How do Python generators work? ({uuid.uuid4().hex[:8]})"


async def _send(client: Client, request: SendMessageRequest) -> Task:
    responses = [response async for response in client.send_message(request)]
    assert len(responses) == 1 and responses[0].HasField("task"), responses
    return responses[0].task


async def test_the_agent_card_describes_the_research_skill(stack_with_keys: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack_with_keys.config.api_url) as http:
        response = await http.get("/.well-known/agent-card.json")  # public: no key
    assert response.status_code == 200
    card = response.json()
    assert card["name"] == "podcrew"
    assert card["capabilities"]["streaming"] is True
    (skill,) = card["skills"]
    assert skill["id"] == "research" and skill["examples"]
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    (interface,) = card["supportedInterfaces"]
    assert interface["url"] == f"{stack_with_keys.config.api_url}/a2a"
    assert interface["protocolBinding"] == "JSONRPC"
    # The SDK's own model of a card accepts it as is.
    from google.protobuf.json_format import ParseDict

    parsed = ParseDict(card, AgentCard())
    assert parsed.skills[0].name and parsed.supported_interfaces[0].url == interface["url"]


async def test_a_message_is_a_run_that_completes_with_the_cited_report(
    stack_with_keys: Stack, acme: Client
) -> None:
    task = await _send(acme, _ask(_question()))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status
    (artifact,) = task.artifacts
    report = next(part.text for part in artifact.parts if part.text)
    (data,) = get_data_parts(list(artifact.parts))
    assert data["sources"], data
    assert "[1]" in report
    # The task is the run: the public API shows the same run, with the same report.
    async with httpx.AsyncClient(
        base_url=stack_with_keys.config.api_url, headers={"x-api-key": ACME}
    ) as http:
        run = (await http.get(f"/v1/runs/{task.id}")).json()
    assert run["status"] == "succeeded"
    assert run["result"]["report"] == report
    assert len(run["result"]["sources"]) == len(data["sources"])
    fetched = await acme.get_task(GetTaskRequest(id=task.id))
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert fetched.artifacts[0].parts[0].text == report


async def test_a_stream_sends_status_updates_then_the_report(acme_streaming: Client) -> None:
    events: list[StreamResponse] = [
        event async for event in acme_streaming.send_message(_ask(_question()))
    ]
    kinds = [event.WhichOneof("payload") for event in events]
    assert kinds[0] == "task"
    task_id = events[0].task.id
    updates = [event.status_update for event in events if event.HasField("status_update")]
    assert all(update.task_id == task_id for update in updates)
    seen = [update.metadata["event"] for update in updates]
    assert seen[-1] == "run.succeeded"
    assert {"run.started", "run.planned", "research.finished"} <= set(seen), seen
    assert updates[-1].status.state == TaskState.TASK_STATE_COMPLETED
    working = [u for u in updates if u.status.state == TaskState.TASK_STATE_WORKING]
    assert working, "no working updates before the end"
    # The whole report, with its sources, comes after the work and before the last status.
    last_artifact = max(i for i, kind in enumerate(kinds) if kind == "artifact_update")
    assert kinds.index("status_update") < last_artifact < len(kinds) - 1
    final = events[last_artifact].artifact_update
    assert final.last_chunk and not final.append
    assert get_data_parts(list(final.artifact.parts))[0]["sources"]


async def test_cancel_a_long_task(acme: Client) -> None:
    question = "Compare every Python web framework in depth. " + _question()
    task = await _send(acme, _ask(question, now=True))
    assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
    cancelled = await acme.cancel_task(CancelTaskRequest(id=task.id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    fetched = await acme.get_task(GetTaskRequest(id=task.id))
    assert fetched.status.state == TaskState.TASK_STATE_CANCELED
    with pytest.raises(TaskNotCancelableError, match="already cancelled"):  # a final task stays so
        await acme.cancel_task(CancelTaskRequest(id=task.id))


async def test_another_tenant_sees_no_such_task(stack_with_keys: Stack, acme: Client) -> None:
    task = await _send(acme, _ask(_question(), now=True))
    async for globex in _client(stack_with_keys, GLOBEX, streaming=False):
        with pytest.raises(TaskNotFoundError, match="no run with id"):
            await globex.get_task(GetTaskRequest(id=task.id))


async def test_a_wrong_key_is_refused(stack_with_keys: Stack) -> None:
    async for client in _client(stack_with_keys, "not-a-key-0123456789", streaming=False):
        with pytest.raises(A2AClientError, match="401"):
            await _send(client, _ask(_question()))
    async with httpx.AsyncClient(base_url=stack_with_keys.config.api_url) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "run_x"}}
        response = await http.post("/a2a", json=body)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
