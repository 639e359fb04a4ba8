"""The AgentRun CRD: a structural schema that refuses bad specs, in step with the operator.

The schema is checked with a real validator: the CRD's `openAPIV3Schema` turned into JSON
Schema (draft 4, the dialect OpenAPI 3.0 schemas come from) with unknown fields refused, as
`kubectl apply`'s strict field validation does. The same validator guards the API emulator
the integration tests use, and one of them proves the emulator answers 422 with it.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from podcrew_core.contracts.schemas import (
    MAX_QUESTION_CHARS,
    Evaluation,
    ResolvedBudget,
    Run,
    RunResult,
    RunStatus,
    Tier,
    Usage,
)
from podcrew_operator.resource import API_VERSION, KIND, PLURAL, AgentRunSpec
from podcrew_operator.status import SUBMITTED, Condition, merge_conditions, run_fields

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "k8s" / "examples" / "agentrun.yaml"


@pytest.fixture(scope="module")
def crd(oplib: Any) -> dict[str, Any]:
    return dict(oplib.load_crd())


@pytest.fixture(scope="module")
def validator(oplib: Any) -> Any:
    return oplib.agentrun_validator()


def agentrun(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    }


def test_the_example_is_valid(validator: Any) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert list(validator.iter_errors(example)) == []
    AgentRunSpec.model_validate(example["spec"]).run_request()


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({}, "question"),
        ({"question": "ab"}, "question"),
        ({"question": "x" * (MAX_QUESTION_CHARS + 1)}, "question"),
        ({"question": "What is a generator?", "model": "gigantic"}, "model"),
        ({"question": "What is a generator?", "budget": {"tokens": 0}}, "tokens"),
        ({"question": "What is a generator?", "budget": {"costUsd": 0}}, "costUsd"),
        (
            {"question": "What is a generator?", "budget": {"deadlineSeconds": 3601}},
            "deadlineSeconds",
        ),
        ({"question": "What is a generator?", "budget": {"dollars": 1}}, "dollars"),
        (
            {"question": "What is a generator?", "ttlSecondsAfterFinished": -1},
            "ttlSecondsAfterFinished",
        ),
        ({"question": "What is a generator?", "threadId": "no spaces allowed"}, "threadId"),
        (
            {"question": "What is a generator?", "output": {"configMapName": "Not_A_Name"}},
            "configMapName",
        ),
        ({"question": "What is a generator?", "questions": ["typo"]}, "questions"),
    ],
    ids=[
        "no-question",
        "question-too-short",
        "question-too-long",
        "unknown-tier",
        "zero-tokens",
        "zero-cost",
        "deadline-over-an-hour",
        "unknown-budget-field",
        "negative-ttl",
        "bad-thread-id",
        "bad-configmap-name",
        "unknown-spec-field",
    ],
)
def test_invalid_specs_are_rejected(validator: Any, spec: dict[str, Any], where: str) -> None:
    errors = list(validator.iter_errors(agentrun(**spec)))
    assert errors, f"accepted: {spec}"
    assert any(where in "/".join(map(str, e.path)) + e.message for e in errors), [
        e.message for e in errors
    ]


@pytest.mark.integration
def test_the_emulated_api_server_rejects_them_too(kube: Any) -> None:
    response = kube.create("bad", question="ab", model="gigantic")
    assert response.status_code == 422, response.text
    assert "question" in response.json()["message"] and "model" in response.json()["message"]
    assert kube.agentrun("bad") is None


def test_the_schema_and_the_operator_read_the_same_spec(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    aliases = {field.alias or name for name, field in AgentRunSpec.model_fields.items()}
    assert set(spec["properties"]) == aliases
    assert spec["required"] == ["question"]
    assert spec["properties"]["model"]["enum"] == list(get_args(Tier))
    assert spec["properties"]["question"]["maxLength"] == MAX_QUESTION_CHARS
    # The run is submitted once: changing the spec afterwards is refused by the API server.
    assert {
        "rule": "self == oldSelf",
        "message": spec["x-kubernetes-validations"][0]["message"],
    } in spec["x-kubernetes-validations"]


def test_crd_shape(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == f"{PLURAL}.podcrew.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert "ar" in crd["spec"]["names"]["shortNames"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Tokens"] == ".status.usage.tokens"
    assert columns["Cost"] == ".status.usage.costUsd"
    assert columns["Age"] == ".metadata.creationTimestamp"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) == {
        "phase",
        "runId",
        "startedAt",
        "finishedAt",
        "usage",
        "conditions",
        "reportRef",
        "evaluation",
    }
    scores = status["evaluation"]["properties"]["scores"]
    assert scores["additionalProperties"] == {"type": "number"}
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
    condition = status["conditions"]["items"]
    assert set(condition["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }


def test_the_status_the_operator_writes_fits_the_schema(validator: Any) -> None:
    now = datetime.now(UTC)
    run = Run(
        id="run_1",
        status=RunStatus.SUCCEEDED,
        question="What is a generator?",
        budget=ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        created_at=now,
        started_at=now,
        finished_at=now,
        result=RunResult(report="# Report", sources=[]),
        usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.01),
        cost_usd=0.01,
        evaluation=Evaluation(
            scores={"citation_validity": 1.0, "redundancy": 0.25},
            evaluator="podcrew-eval",
            evaluated_at=now,
        ),
    )
    status = run_fields(run)
    assert status["evaluation"]["scores"] == {"citation_validity": 1.0, "redundancy": 0.25}
    status["conditions"] = merge_conditions(
        [], [Condition(SUBMITTED, True, "Accepted", "run run_1 accepted")], generation=1, now=now
    )
    status["reportRef"] = {"configMapName": "x-report", "key": "report.md"}
    obj = agentrun(question="What is a generator?")
    obj["status"] = status
    assert list(validator.iter_errors(obj)) == []
    broken = copy.deepcopy(obj)
    broken["status"]["report"] = "# the report itself"
    assert list(validator.iter_errors(broken))
    unscored = copy.deepcopy(obj)
    unscored["status"]["evaluation"]["scores"]["support"] = "high"
    assert list(validator.iter_errors(unscored))
