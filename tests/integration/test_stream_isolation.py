"""One tenant's event stream cannot stall another's: a `Last-Event-ID` Redis would refuse, or
one past the run's latest event, is a 400 before the stream starts, and meanwhile another
tenant's stream delivers every event of its run on time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from podcrew_cli.stack import Stack

from .conftest import keyed_client, keyed_stack

pytestmark = pytest.mark.integration

ACME, GLOBEX = "acme-key-0123456789", "globex-key-0123456789"
BAD_IDS = ("99999999999999999999", "1-99999999999999999999", "abc", "-1")
RUN_TIME_S = 30  # far beyond a run's time on this stack (a few seconds)


@pytest.fixture(scope="module")
def two_tenants() -> Iterator[Stack]:
    with keyed_stack(
        {ACME: "acme", GLOBEX: "globex"}, PODCREW_LLM_OFFLINE_LATENCY_S="0.2"
    ) as stack:
        yield stack


def _submit(client: httpx.Client) -> str:
    # A question of its own: one answered from the result cache would be final at once.
    question = f"How do Python generators work? ({uuid.uuid4().hex[:8]})"
    response = client.post("/v1/runs", json={"question": question})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _collect(client: httpx.Client, run_id: str, out: list[dict[str, Any]]) -> None:
    """Every event of the run's stream, in `out` as they arrive, up to the stream's end."""
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
        for sse in source.iter_sse():
            out.append({"id": sse.id, "event": sse.event})


def _bad_stream_answer(client: httpx.Client, run_id: str, last_id: str) -> httpx.Response:
    """Open the run's stream with `last_id`; held open (as an attacker would) if it starts."""
    headers = {"Last-Event-ID": last_id}
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events", headers=headers) as source:
        if source.response.status_code == 200:
            time.sleep(RUN_TIME_S)  # a stream that starts is held while the other one runs
        source.response.read()
        return source.response


def test_a_bad_stream_of_one_tenant_does_not_stall_anothers(two_tenants: Stack) -> None:
    with keyed_client(two_tenants, ACME) as acme, keyed_client(two_tenants, GLOBEX) as globex:
        theirs = _submit(acme)
        answers: list[httpx.Response] = []
        holders = [
            threading.Thread(
                target=lambda i=i: answers.append(_bad_stream_answer(acme, theirs, i)), daemon=True
            )
            for i in BAD_IDS
        ]
        for holder in holders:
            holder.start()
        time.sleep(0.5)  # their streams are open (or refused) before the other run starts
        mine = _submit(globex)
        events: list[dict[str, Any]] = []
        reader = threading.Thread(target=_collect, args=(globex, mine, events), daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(RUN_TIME_S)
        took = time.monotonic() - started
        assert events and events[-1]["event"] == "run.succeeded", (took, events[-3:])
        ids = [tuple(map(int, e["id"].split("-"))) for e in events]
        assert ids == sorted(set(ids))  # every event once, in order
        assert events[0]["event"] == "run.queued"
        run = globex.get(f"/v1/runs/{mine}").json()
        assert run["status"] == "succeeded"
        for holder in holders:
            holder.join(RUN_TIME_S + 5)
        for answer in answers:
            assert answer.status_code == 400, answer.text
            problem = answer.json()
            assert problem["type"].endswith("/bad-request")
            assert "stream id is <ms>-<seq> or <ms>" in problem["detail"]


def test_a_bad_last_event_id_on_a_finished_run_is_a_400_not_a_resume(two_tenants: Stack) -> None:
    with keyed_client(two_tenants, ACME) as acme:
        run_id = _submit(acme)
        deadline = time.monotonic() + RUN_TIME_S
        while acme.get(f"/v1/runs/{run_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        last = acme.get(f"/v1/runs/{run_id}/events").text.strip().splitlines()
        final_id = next(line[4:] for line in reversed(last) if line.startswith("id: "))
        ms, seq = map(int, final_id.split("-"))
        for bad in (*BAD_IDS, f"{ms}-{seq + 1}", f"{ms + 1}"):
            answer = acme.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": bad})
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
        # Its own final event's id resumes after the end: nothing more, and no closing event.
        answer = acme.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": final_id})
        assert answer.status_code == 200 and "stream.closing" not in answer.text
        assert "event:" not in answer.text
