"""The ConfigMap a finished run's report is written to, owned by its AgentRun.

The owner reference makes Kubernetes' garbage collector delete the ConfigMap with the
AgentRun. It sets `controller: true` but not `blockOwnerDeletion`, which would need update
rights on `agentruns/finalizers` (OwnerReferencesPermissionEnforcement) for nothing: the
report may go before its AgentRun does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from podcrew_core.contracts.schemas import Run

from .resource import API_VERSION, KIND

REPORT_KEY = "report.md"
SOURCES_KEY = "sources.json"
# A ConfigMap holds at most 1 MiB in all; leave room for the sources and the metadata.
MAX_REPORT_BYTES = 900 * 1024
TRUNCATION_NOTE = "\n\n*[report truncated: it exceeded what a ConfigMap can hold]*\n"
AGENTRUN_LABEL = "podcrew.dev/agentrun"
RUN_ID_ANNOTATION = "podcrew.dev/run-id"


def owner_reference(agentrun: Mapping[str, Any]) -> dict[str, Any]:
    meta = agentrun["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def is_owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def fit_report(text: str, limit: int = MAX_REPORT_BYTES) -> str:
    """The report, cut at a character boundary to fit in `limit` bytes with a note saying so."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = limit - len(TRUNCATION_NOTE.encode())
    return raw[:room].decode(errors="ignore") + TRUNCATION_NOTE


def config_map(agentrun: Mapping[str, Any], name: str, run: Run) -> dict[str, Any]:
    """The ConfigMap holding `run`'s report (the run must have a result)."""
    if run.result is None:
        raise ValueError(f"run {run.id} has no result to store")
    meta = agentrun["metadata"]
    sources = [ref.model_dump(mode="json") for ref in run.result.sources]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                AGENTRUN_LABEL: meta["name"],
                "app.kubernetes.io/managed-by": "podcrew-operator",
                "app.kubernetes.io/part-of": "podcrew",
            },
            "annotations": {RUN_ID_ANNOTATION: run.id},
            "ownerReferences": [owner_reference(agentrun)],
        },
        "data": {
            REPORT_KEY: fit_report(run.result.report),
            SOURCES_KEY: json.dumps(sources, indent=2, ensure_ascii=False),
        },
    }


def report_ref(name: str) -> dict[str, str]:
    return {"configMapName": name, "key": REPORT_KEY}
