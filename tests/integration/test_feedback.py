"""User feedback and evaluations against the real stack: stored with the run, tenant-scoped,
once per run and user, bad input a 4xx problem, and every run naming its prompt versions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from podcrew_cli.stack import Stack
from podcrew_core.runtime.auth import hash_key
from podcrew_orchestrator.pipeline import PLANNER_PROMPTS
from podcrew_research.loop import RESEARCH_PROMPTS
from podcrew_writer.compose import WRITER_PROMPTS

from .conftest import Runs, keyed_client, keyed_stack

pytestmark = pytest.mark.integration

ACME_ALICE, ACME_BOB, GLOBEX = "acme-alice-0123456789", "acme-bob-0123456789", "globex-0123456789"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def tenants() -> Iterator[Stack]:
    with keyed_stack(
        {ACME_ALICE: "acme", ACME_BOB: "acme", GLOBEX: "globex"},
        PODCREW_LLM_OFFLINE_LATENCY_S="0.05",
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def seeded_run(stack: Stack) -> str:
    """One succeeded run (on the session's stack) for this module's bad-input cases."""
    with httpx.Client(base_url=stack.config.api_url, timeout=60) as client:
        return str(_finished_run(client)["id"])


def _finished_run(client: httpx.Client) -> dict[str, Any]:
    question = f"How do Python generators work? ({uuid.uuid4().hex[:8]})"
    response = client.post("/v1/runs?wait=60", json={"question": question})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "succeeded", run
    return dict(run)


def test_feedback_round_trip_is_once_per_user_and_scoped_to_the_tenant(tenants: Stack) -> None:
    with (
        keyed_client(tenants, ACME_ALICE) as alice,
        keyed_client(tenants, ACME_BOB) as bob,
        keyed_client(tenants, GLOBEX) as globex,
    ):
        run = _finished_run(alice)
        url = f"/v1/runs/{run['id']}/feedback"
        good = {"score": 1, "comment": "Clear and well cited."}
        first = alice.post(url, json=good)
        assert first.status_code == 201, first.text
        given = first.json()
        assert given["score"] == 1 and given["comment"] == good["comment"]
        assert re.fullmatch(r"key-[0-9a-f]{16}", given["user"]), given
        assert ACME_ALICE not in first.text and hash_key(ACME_ALICE) not in first.text

        # The same feedback again (a retry): what is stored, not a second one.
        again = alice.post(url, json=good)
        assert again.status_code == 200 and again.json() == given
        # Other feedback by the same user: refused, and the first stands.
        changed = alice.post(url, json={"score": -1})
        assert changed.status_code == 409 and changed.headers["content-type"] == PROBLEM
        assert changed.json()["type"].endswith("/feedback-exists")

        # Another user of the tenant gives their own, naming the wrong source.
        wrong = {"score": -1, "source": 1, "section": run["sub_questions"][0]}
        bobs = bob.post(url, json=wrong)
        assert bobs.status_code == 201, bobs.text

        stored = alice.get(f"/v1/runs/{run['id']}").json()["feedback"]
        assert [(f["score"], f["user"]) for f in stored] == [
            (1, given["user"]),
            (-1, bobs.json()["user"]),
        ]
        assert given["user"] != bobs.json()["user"]
        assert stored[1]["source"] == 1 and stored[1]["section"] == wrong["section"]
        assert bob.get(url).json() == stored

        # Another tenant's run does not exist for globex, whatever it asks.
        for response in (
            globex.post(url, json=good),
            globex.get(url),
            globex.put(
                f"/v1/runs/{run['id']}/evaluation", json={"scores": {"x": 1}, "evaluator": "e"}
            ),
        ):
            assert response.status_code == 404, response.text
            assert response.json()["type"].endswith("/run-not-found")
        assert len(alice.get(url).json()) == 2

        # Counted once per user, by the run's prompt versions and tier.
        metrics = alice.get("/metrics").text
        for rating in ("positive", "negative"):
            series = (
                f'podcrew_run_feedback_total{{prompt_version="{run["prompt_version"]}",'
                f'rating="{rating}",tier="standard"}}'
            )
            assert f"{series} 1.0" in metrics, metrics  # alice and bob, retries not counted


def test_feedback_and_evaluation_expire_with_the_run(tenants: Stack) -> None:
    with keyed_client(tenants, ACME_ALICE) as alice:
        run = _finished_run(alice)
        assert alice.post(f"/v1/runs/{run['id']}/feedback", json={"score": 1}).status_code == 201
        evaluation = {"scores": {"citation_validity": 1.0}, "evaluator": "test"}
        assert alice.put(f"/v1/runs/{run['id']}/evaluation", json=evaluation).status_code == 200
    client = redis.Redis.from_url(tenants.config.redis_url, decode_responses=True)
    try:
        run_key = next(iter(client.scan_iter(f"*:run:{run['id']}")))
        run_ttl = client.ttl(run_key)
        for suffix in ("feedback", "evaluation"):
            ttl = client.ttl(f"{run_key}:{suffix}")
            assert 0 < ttl <= run_ttl and run_ttl - ttl <= 2, (suffix, ttl, run_ttl)
    finally:
        client.close()


def test_an_evaluation_is_stored_with_the_run_and_replaced_by_the_next(runs: Runs) -> None:
    run_id = runs.submit(f"What does asyncio do? ({uuid.uuid4().hex[:8]})")
    early = runs.http.put(
        f"/v1/runs/{run_id}/evaluation", json={"scores": {"support": 0.5}, "evaluator": "e"}
    )
    run = runs.wait_final(run_id)
    if run["status"] != "succeeded":
        pytest.fail(f"the run did not succeed: {run}")
    # Too early while the run was running (unless it had already finished).
    assert early.status_code in (200, 409), early.text
    first = {"scores": {"citation_validity": 0.75, "support": 0.5}, "evaluator": "podcrew-eval"}
    second = {"scores": {"citation_validity": 1.0}, "evaluator": "podcrew-eval judge"}
    assert runs.http.put(f"/v1/runs/{run_id}/evaluation", json=first).status_code == 200
    stored = runs.http.put(f"/v1/runs/{run_id}/evaluation", json=second)
    assert stored.status_code == 200, stored.text
    evaluation = runs.http.get(f"/v1/runs/{run_id}").json()["evaluation"]
    assert evaluation["scores"] == second["scores"]
    assert evaluation["evaluator"] == second["evaluator"]
    assert evaluation["evaluated_at"] == stored.json()["evaluated_at"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"score": 0}, 422),
        ({"score": 5}, 422),
        ({"score": True}, 422),
        ({"score": "1"}, 422),
        ({"score": 1.0}, 422),
        ({}, 422),
        ({"score": 1, "comment": "x" * 2001}, 422),
        ({"score": 1, "comment": ""}, 422),
        ({"score": 1, "source": 0}, 422),
        ({"score": 1, "source": 999}, 422),  # the report lists no such source
        ({"score": 1, "rating": "great"}, 422),
        ([1], 422),
    ],
)
def test_bad_feedback_is_a_4xx_problem(runs: Runs, seeded_run: str, body: Any, status: int) -> None:
    response = runs.http.post(f"/v1/runs/{seeded_run}/feedback", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "body",
    [
        {"scores": {}, "evaluator": "e"},
        {"scores": {"Bad Name": 1}, "evaluator": "e"},
        {"scores": {"x": "high"}, "evaluator": "e"},
        {"scores": {"x": 1}, "evaluator": ""},
        {"scores": {"x": 1}},
        {"scores": {f"s{i}": 1 for i in range(33)}, "evaluator": "e"},
    ],
)
def test_bad_evaluation_is_a_4xx_problem(runs: Runs, seeded_run: str, body: Any) -> None:
    response = runs.http.put(f"/v1/runs/{seeded_run}/evaluation", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


def test_not_json_and_unknown_ids_are_4xx_problems(runs: Runs, seeded_run: str) -> None:
    not_json = runs.http.post(
        f"/v1/runs/{seeded_run}/feedback",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.headers["content-type"] == PROBLEM
    for bad_id in ("run_" + "0" * 32, "run_x:events", "../run", "x" * 300):
        response = runs.http.post(f"/v1/runs/{bad_id}/feedback", json={"score": 1})
        assert response.status_code == 404, (bad_id, response.text)
        assert response.headers["content-type"] == PROBLEM


def test_a_run_names_the_prompt_versions_it_used(runs: Runs) -> None:
    run = runs.wait_final(runs.submit(f"How does import find modules? ({uuid.uuid4().hex[:8]})"))
    assert run["status"] == "succeeded", run
    # What each service has at import, as the stack's agents offer it (kb_search, fetch_url).
    research = run["prompt_version"].split(",")[1]
    assert run["prompt_version"] == f"{PLANNER_PROMPTS.version},{research},{WRITER_PROMPTS.version}"
    assert re.fullmatch(r"research:[0-9a-f]{12}", research)
    assert research != RESEARCH_PROMPTS.version  # the offered tools are part of it
