"""`POST /v1/research` through the real app (lifespan included) with the offline model."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from podcrew_cli.stack import free_port
from podcrew_core.contracts.errors import PROBLEM_BASE, PROBLEM_CONTENT_TYPE
from podcrew_core.runtime.auth import ServiceTokenSettings
from podcrew_core.runtime.settings import RedisSettings
from podcrew_research.main import create_app
from podcrew_research.settings import ResearchConfig, ResearchSettings

BODY = {
    "run_id": "run-1",
    "question": "How do Python generators work?",
    "sub_question": "How do generators yield values?",
}


def config(**settings: Any) -> ResearchConfig:
    # A port nothing listens on: these tests need no Redis (no budget header is sent).
    redis = RedisSettings(url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"))
    return ResearchConfig(service=ResearchSettings(**settings), redis=redis)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(config(max_concurrency=4))) as test_client:
        yield test_client


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert body["retryable"] is False  # each of these: repeating the call cannot help
    return body


def test_research_answers_with_kb_findings(client: TestClient) -> None:
    response = client.post("/v1/research", json=BODY, headers={"x-podcrew-deadline-ms": "5000"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sub_question"] == BODY["sub_question"]
    assert body["findings"]
    assert all(f["source"]["id"].startswith("kb:") for f in body["findings"])
    assert [c["name"] for c in body["tool_calls"]] == ["kb_search"]
    assert body["steps"] == 2
    assert body["usage"]["llm_calls"] == 2


def test_request_max_steps_is_honoured(client: TestClient) -> None:
    response = client.post("/v1/research", json=BODY | {"max_steps": 1})
    assert response.status_code == 200
    assert response.json()["steps"] == 1


def test_bad_body_is_problem_422(client: TestClient) -> None:
    response = client.post("/v1/research", json={"run_id": "r", "question": "q"})
    body = problem(response, 422, "validation-failed")
    assert "sub_question" in body["detail"]


def test_unknown_field_is_problem_422(client: TestClient) -> None:
    response = client.post("/v1/research", json=BODY | {"temperature": 2})
    problem(response, 422, "validation-failed")


def test_malformed_json_is_problem_400(client: TestClient) -> None:
    response = client.post(
        "/v1/research", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem(response, 400, "malformed-json")


def test_wrong_content_type_is_problem_415(client: TestClient) -> None:
    response = client.post(
        "/v1/research", content=b"sub_question=x", headers={"content-type": "text/plain"}
    )
    problem(response, 415, "unsupported-media-type")


def test_expired_deadline_is_refused_with_504(client: TestClient) -> None:
    response = client.post("/v1/research", json=BODY, headers={"x-podcrew-deadline-ms": "0"})
    body = problem(response, 504, "deadline-exceeded")
    assert "research" in body["detail"]


def test_unparseable_deadline_is_problem_400(client: TestClient) -> None:
    response = client.post("/v1/research", json=BODY, headers={"x-podcrew-deadline-ms": "soon"})
    problem(response, 400, "bad-request")


def test_not_ready_while_redis_is_unreachable(client: TestClient) -> None:
    # No Redis listens in unit tests: the knowledge base is loaded, Redis is not reachable.
    response = client.get("/readyz")
    assert response.status_code == 503
    problem = response.json()
    assert set(problem["checks"]) == {"redis"}
    assert "kb" not in problem["checks"]


def test_metrics_expose_tool_calls_and_queue_depth(client: TestClient) -> None:
    client.post("/v1/research", json=BODY)
    text = client.get("/metrics").text
    assert 'podcrew_tool_calls_total{outcome="ok",tool="kb_search"}' in text
    assert 'podcrew_admission_queue_depth{service="research-agent"} 0.0' in text
    assert 'podcrew_llm_requests_total{model="claude-haiku-4-5"' in text


def test_the_app_obeys_the_settings_it_is_given_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN", "from-the-environment")
    token = ServiceTokenSettings(service_token=SecretStr("given-to-create-app"))
    given = dataclasses.replace(config(max_concurrency=4), auth=token)
    with TestClient(create_app(given)) as client:

        def status(token: str) -> int:
            headers = {"authorization": f"Bearer {token}"}
            return client.post("/v1/research", json=BODY, headers=headers).status_code

        assert status("given-to-create-app") == 200
        assert status("from-the-environment") == 401


def test_missing_corpus_fails_startup(tmp_path: Any) -> None:
    app = create_app(config(corpus_dir=tmp_path / "absent"))
    with pytest.raises(FileNotFoundError), TestClient(app):
        pass
