"""AgentRuns end to end: the `podcrew-operator` process, a Kubernetes API emulator (kmock) and
the real podcrew stack, all on loopback.

The whole operator runs (`kopf run` through the entry point, logged in with a kubeconfig): its
watch, finalizer, daemons and index are kopf's own. Submissions are counted at the
orchestrator, by question (each test asks its own), with coalescing and the result cache off,
so a second submission would be a second run.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

FINAL = ("Succeeded", "Failed", "Cancelled")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind]
    assert len(found) == 1, obj.get("status")
    return found[0]


@contextmanager
def frozen(orchestrator: Any) -> Iterator[None]:
    """The worker stopped (SIGSTOP) mid-run: its runs stay as they are until it resumes."""
    orchestrator.worker.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        orchestrator.worker.signal(signal.SIGCONT)


def has_run_id(obj: dict[str, Any] | None) -> bool:
    return obj is not None and bool(obj.get("status", {}).get("runId"))


def test_agentrun_succeeds_with_its_report_in_an_owned_configmap(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    assert kube.create("generators", question=question, model="economy").is_success

    obj = kube.wait_phase("generators", *FINAL, timeout_s=40)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    run = orchestrator.run(status["runId"])
    assert run["status"] == "succeeded" and run["tier"] == "economy"
    assert orchestrator.runs_asking(question) == [status["runId"]]
    # Usage mirrors the run's, never the report itself.
    usage = run["usage"]
    total = sum(
        usage[k]
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    )
    assert status["usage"] == {"tokens": total, "costUsd": pytest.approx(run["cost_usd"])}
    assert total > 0
    assert status["startedAt"] and status["finishedAt"]
    # Exactly these fields: the report itself is never in the status.
    assert set(status) == {
        "phase",
        "runId",
        "startedAt",
        "finishedAt",
        "usage",
        "conditions",
        "reportRef",
    }
    assert status["reportRef"] == {"configMapName": "generators-report", "key": "report.md"}
    assert condition(obj, "Submitted")["status"] == "True"
    finished = condition(obj, "Finished")
    assert (finished["status"], finished["reason"]) == ("True", "Succeeded")
    assert finished["observedGeneration"] == 1
    assert condition(obj, "ReportStored")["status"] == "True"
    assert "podcrew.dev/cancel-run" in obj["metadata"]["finalizers"]

    config_map = kube.config_map("generators-report")
    assert config_map is not None
    assert config_map["data"]["report.md"] == run["result"]["report"]
    (owner,) = config_map["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "podcrew.dev/v1alpha1",
        "kind": "AgentRun",
        "name": "generators",
        "uid": obj["metadata"]["uid"],
        "controller": True,
    }
    events = kube.wait_events("generators", "RunSucceeded")
    assert events[0]["type"] == "Normal" and status["runId"] in events[0]["message"]


def test_an_evaluated_run_shows_its_scores_in_the_status(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    assert kube.create("evaluated", question=question).is_success
    obj = kube.wait_phase("evaluated", *FINAL, timeout_s=40)
    assert obj["status"]["phase"] == "Succeeded" and "evaluation" not in obj["status"]

    # Evaluated after it finished, as `podcrew eval` does: the operator still notices.
    scores = {"citation_validity": 1.0, "support": 0.5, "redundancy": 0.125}
    evaluation = {"scores": scores, "evaluator": "podcrew-eval lexical"}
    stored = orchestrator.http.put(f"/v1/runs/{obj['status']['runId']}/evaluation", json=evaluation)
    assert stored.status_code == 200, stored.text

    obj = kube.wait("evaluated", lambda o: bool(o and o["status"].get("evaluation")), 10)
    assert obj is not None
    assert obj["status"]["evaluation"] == {
        "scores": scores,
        "evaluator": "podcrew-eval lexical",
        "evaluatedAt": stored.json()["evaluated_at"][:19] + "Z",
    }
    assert obj["status"]["phase"] == "Succeeded"


def test_the_report_goes_to_the_named_configmap_and_never_over_someone_elses(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    kube.http.post(
        f"/api/v1/namespaces/{kube.namespace}/configmaps",
        json={"metadata": {"name": "taken", "namespace": kube.namespace}, "data": {"keep": "me"}},
    ).raise_for_status()
    assert kube.create("mine", question=question, output={"configMapName": "answer"}).is_success
    assert kube.create(
        "theirs", question=question + "?", output={"configMapName": "taken"}
    ).is_success

    mine = kube.wait_phase("mine", *FINAL, timeout_s=40)
    assert mine["status"]["reportRef"]["configMapName"] == "answer"
    assert kube.config_map("answer") is not None
    theirs = kube.wait_phase("theirs", *FINAL, timeout_s=40)
    assert theirs["status"]["phase"] == "Succeeded"  # the run did succeed...
    stored = condition(theirs, "ReportStored")
    assert (stored["status"], stored["reason"]) == ("False", "StoreFailed")  # ...its report not
    assert "reportRef" not in theirs["status"]
    assert kube.config_map("taken")["data"] == {"keep": "me"}
    assert "not owned" in kube.wait_events("theirs", "ReportNotStored")[0]["message"]


def test_orchestrator_down_is_retried_until_it_recovers(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    orchestrator.stop_api()
    try:
        assert kube.create("patient", question=question).is_success
        obj = kube.wait(
            "patient",
            lambda o: (
                o is not None
                and any(
                    c["reason"] == "OrchestratorUnavailable"
                    for c in o.get("status", {}).get("conditions", [])
                )
            ),
        )
        assert obj is not None
        assert obj["status"]["phase"] == "Pending" and "runId" not in obj["status"]
        assert condition(obj, "Submitted")["status"] == "False"
        time.sleep(1.5)  # several retries (backoff capped at 1 s here), none got through
    finally:
        orchestrator.start_api()

    obj = kube.wait_phase("patient", *FINAL, timeout_s=40)
    assert obj["status"]["phase"] == "Succeeded"
    submitted = condition(obj, "Submitted")
    assert (submitted["status"], submitted["reason"]) == ("True", "Accepted")
    assert orchestrator.runs_asking(question) == [obj["status"]["runId"]]
    assert operator.log().count("failed temporarily") >= 2


def _ready(operator: Any, timeout_s: float = 15.0) -> httpx.Response:
    """The readiness answer once it is 200, or the last one after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.get(operator.readiness, timeout=5.0)
        if answer.status_code == 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_the_operator_is_ready_while_the_api_is_and_alive_either_way(
    operator: Any, orchestrator: Any
) -> None:
    """Readiness follows what the operator needs (the api); liveness does not, since a restart
    would not bring the api back."""
    assert _ready(operator).json() == {"status": "ready"}
    orchestrator.stop_api()
    try:
        answer = httpx.get(operator.readiness, timeout=5.0)
        assert answer.status_code == 503
        assert "orchestrator api is unreachable" in answer.json()["reason"]
        assert httpx.get(operator.liveness, timeout=5.0).status_code == 200
    finally:
        orchestrator.start_api()
    assert _ready(operator).status_code == 200


def test_deleting_a_running_agentrun_cancels_its_run(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    assert kube.create("doomed", question=question).is_success
    obj = kube.wait_phase("doomed", "Running", timeout_s=30)
    run_id = obj["status"]["runId"]
    with frozen(orchestrator):  # still running when the delete arrives, whatever the timing
        kube.delete("doomed")
        kube.wait_gone("doomed", timeout_s=20)  # cancelled, then the finalizer was removed
        run = orchestrator.run(run_id)
    assert run["status"] == "cancelled"
    assert orchestrator.runs_asking(question) == [run_id]


def test_finalizer_is_released_when_the_orchestrator_is_gone(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    assert kube.create("orphan", question=question).is_success
    kube.wait("orphan", has_run_id)
    orchestrator.stop_api()
    try:
        started = time.monotonic()
        kube.delete("orphan")
        kube.wait_gone("orphan", timeout_s=20)
        waited = time.monotonic() - started
    finally:
        orchestrator.start_api()
    # PODCREW_OPERATOR_FINALIZER_TIMEOUT_S is 3 here: tried that long, then let go.
    assert 2.0 <= waited < 12.0, waited
    (event,) = kube.wait_events("orphan", "CancelAbandoned")
    assert event["type"] == "Warning" and "could not be cancelled within 3s" in event["message"]


def test_operator_restart_mid_run_does_not_submit_again(
    kube: Any, make_operator: Callable[..., Any], orchestrator: Any, question: str
) -> None:
    first = make_operator()
    assert kube.create("survivor", question=question).is_success
    obj = kube.wait("survivor", has_run_id)
    assert obj is not None
    run_id = obj["status"]["runId"]
    with frozen(orchestrator):
        first.kill()  # SIGKILL: no cleanup, as a crashed or evicted pod
        second = make_operator()
        # The new operator picks the run up where it was (same id), without submitting.
        time.sleep(1.0)
    obj = kube.wait_phase("survivor", *FINAL, timeout_s=40)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["runId"] == run_id
    assert orchestrator.runs_asking(question) == [run_id]
    assert "run submitted" not in second.log()


def test_a_lost_status_write_resubmits_with_the_same_key_and_gets_the_same_run(
    kube: Any, emulator: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    """The crash window: the run was accepted but its id never reached the AgentRun. The next
    attempt submits again, with the same Idempotency-Key, and the orchestrator answers with the
    run it already has."""
    emulator.server.failing_status_patches["twice"] = 1  # the write of the run id fails once
    assert kube.create("twice", question=question).is_success
    obj = kube.wait_phase("twice", *FINAL, timeout_s=40)
    assert obj["status"]["phase"] == "Succeeded"
    runs = orchestrator.runs_asking(question)
    assert runs == [obj["status"]["runId"]]
    submissions = [line for line in operator.log().splitlines() if "run submitted" in line]
    assert len(submissions) == 2 and all(runs[0] in line for line in submissions), submissions


def test_finished_agentruns_are_deleted_after_their_ttl(
    kube: Any, operator: Any, orchestrator: Any, question: str
) -> None:
    assert kube.create("brief", question=question, ttlSecondsAfterFinished=1).is_success
    assert kube.create("kept", question=question + "!").is_success
    obj = kube.wait_phase("brief", *FINAL, timeout_s=40)
    assert obj["status"]["phase"] == "Succeeded"
    kube.wait_gone("brief", timeout_s=15)
    kube.wait_phase("kept", *FINAL, timeout_s=40)
    time.sleep(1.5)
    assert kube.agentrun("kept") is not None  # no TTL: kept


def test_at_most_max_concurrent_runs_are_in_flight(
    kube: Any, make_operator: Callable[..., Any], orchestrator: Any, question: str
) -> None:
    make_operator(PODCREW_OPERATOR_MAX_CONCURRENT_RUNS="1")
    assert kube.create("first", question=question).is_success
    kube.wait("first", has_run_id)
    assert kube.create("second", question=question + "?").is_success
    waiting = kube.wait(
        "second",
        lambda o: (
            o is not None
            and any(
                c["reason"] == "WaitingForSlot" for c in o.get("status", {}).get("conditions", [])
            )
        ),
    )
    assert waiting is not None and "runId" not in waiting["status"]
    first = kube.wait_phase("first", *FINAL, timeout_s=40)
    second = kube.wait_phase("second", *FINAL, timeout_s=40)
    assert first["status"]["phase"] == second["status"]["phase"] == "Succeeded"
    # The second run was submitted only once the first had finished.
    first_run = orchestrator.run(first["status"]["runId"])
    second_run = orchestrator.run(second["status"]["runId"])
    assert second_run["created_at"] >= first_run["finished_at"]


def test_a_spec_the_schema_cannot_catch_fails_permanently(
    kube: Any, operator: Any, orchestrator: Any
) -> None:
    """Six characters pass the CRD's minLength, but the API strips whitespace: the operator
    validates with the API's own model and fails the AgentRun at once, without submitting."""
    assert kube.create("blank", question="   ab ").is_success
    obj = kube.wait_phase("blank", *FINAL, timeout_s=20)
    assert obj["status"]["phase"] == "Failed"
    submitted = condition(obj, "Submitted")
    assert (submitted["status"], submitted["reason"]) == ("False", "InvalidSpec")
    assert "question" in submitted["message"]
    assert "runId" not in obj["status"]
    assert kube.wait_events("blank", "InvalidSpec")[0]["type"] == "Warning"
    time.sleep(1.0)
    assert "run submitted" not in operator.log()
    assert "failed permanently" in operator.log()
