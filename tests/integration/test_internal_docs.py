"""The agents' OpenAPI document is as internal as their API: with a service token (every
chart install has one), `/openapi.json` answers only callers presenting it and `/docs` and
`/redoc` are off; the public api's document stays public. Without a token (local
development), the agents accept any caller, and serve their docs to any caller too."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig

pytestmark = pytest.mark.integration

TOKEN = "internal-token-for-docs-tests"


@pytest.fixture(scope="module")
def token_stack() -> Iterator[Stack]:
    with Stack(StackConfig.on_free_ports(env={"PODCREW_SERVICE_TOKEN": TOKEN})) as stack:
        yield stack


def _agents(stack: Stack) -> dict[str, str]:
    c = stack.config
    return {
        "research-agent": f"http://{LOOPBACK}:{c.research_port}",
        "writer-agent": f"http://{LOOPBACK}:{c.writer_port}",
    }


@pytest.mark.parametrize("agent", ["research-agent", "writer-agent"])
def test_an_agents_schema_is_behind_the_service_token(token_stack: Stack, agent: str) -> None:
    with httpx.Client(base_url=_agents(token_stack)[agent], timeout=10) as client:
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(page).status_code == 404, page
        refused = client.get("/openapi.json")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        wrong = client.get("/openapi.json", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        schema = client.get("/openapi.json", headers={"authorization": f"Bearer {TOKEN}"})
        assert schema.status_code == 200
        assert schema.json()["paths"], "the document describes the agent's routes"
        assert "/openapi.json" not in schema.json()["paths"]
        # Its operations stay where they were.
        assert client.get("/healthz").status_code == 200


def test_the_public_api_keeps_its_schema_public(token_stack: Stack) -> None:
    with httpx.Client(base_url=token_stack.config.api_url, timeout=10) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/v1/runs" in schema.json()["paths"]
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("agent", ["research-agent", "writer-agent"])
def test_without_a_token_an_agent_serves_its_docs(stack: Stack, agent: str) -> None:
    with httpx.Client(base_url=_agents(stack)[agent], timeout=10) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200
