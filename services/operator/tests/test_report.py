"""The report ConfigMap: owned by its AgentRun, sized to fit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from podcrew_core.contracts.schemas import (
    ResolvedBudget,
    Run,
    RunResult,
    RunStatus,
    Source,
    SourceRef,
)
from podcrew_operator.report import (
    MAX_REPORT_BYTES,
    REPORT_KEY,
    SOURCES_KEY,
    config_map,
    fit_report,
    is_owned_by,
)

AGENTRUN = {"metadata": {"name": "q1", "namespace": "ns", "uid": "uid-1"}}


def finished(report: str = "# Report [1]") -> Run:
    return Run(
        id="run_1",
        status=RunStatus.SUCCEEDED,
        question="What?",
        budget=ResolvedBudget(max_tokens=1000, max_cost_usd=1.0, deadline_s=60),
        created_at=datetime.now(UTC),
        result=RunResult(
            report=report, sources=[SourceRef(number=1, source=Source(id="kb:a", title="A"))]
        ),
    )


def test_the_configmap_is_owned_and_holds_report_and_sources() -> None:
    body = config_map(AGENTRUN, "q1-report", finished())
    meta = body["metadata"]
    assert (meta["name"], meta["namespace"]) == ("q1-report", "ns")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "podcrew.dev/v1alpha1",
            "kind": "AgentRun",
            "name": "q1",
            "uid": "uid-1",
            "controller": True,
        }
    ]
    assert "blockOwnerDeletion" not in meta["ownerReferences"][0]  # needs no finalizers RBAC
    assert meta["annotations"]["podcrew.dev/run-id"] == "run_1"
    assert body["data"][REPORT_KEY] == "# Report [1]"
    assert json.loads(body["data"][SOURCES_KEY])[0]["source"]["id"] == "kb:a"
    assert is_owned_by(body, "uid-1") and not is_owned_by(body, "uid-2")
    assert not is_owned_by({"metadata": {}}, "uid-1")


def test_a_run_without_result_has_no_configmap() -> None:
    run = finished()
    run.result = None
    with pytest.raises(ValueError, match="no result"):
        config_map(AGENTRUN, "x", run)


def test_an_oversized_report_is_cut_with_a_note() -> None:
    assert fit_report("short") == "short"
    huge = "é" * MAX_REPORT_BYTES  # two bytes each: must be cut at a character boundary
    cut = fit_report(huge)
    assert len(cut.encode()) <= MAX_REPORT_BYTES
    assert cut.endswith("ConfigMap can hold]*\n")
