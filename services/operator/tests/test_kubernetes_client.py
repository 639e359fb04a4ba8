"""The operator's own Kubernetes calls, against kmock's Kubernetes API emulator."""

from __future__ import annotations

from typing import Any

import pytest

from podcrew_operator.clients.kubernetes import Connection, KubernetesClient, ObjectRef
from podcrew_operator.errors import ConfigMapNotOwned, KubernetesUnavailable, ObjectGone

AGENTRUNS = "podcrew.dev/v1alpha1/agentruns"


def config_map(owner_uid: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "q1-report",
            "namespace": "ns",
            "ownerReferences": [
                {
                    "apiVersion": "podcrew.dev/v1alpha1",
                    "kind": "AgentRun",
                    "name": "q1",
                    "uid": owner_uid,
                }
            ],
        },
        "data": {"report.md": text},
    }


@pytest.fixture
async def kube(kmock: Any) -> Any:
    client = KubernetesClient()
    await client.connect(Connection(str(kmock.url).rstrip("/"), {"Authorization": "Bearer t"}))
    yield client
    await client.aclose()


async def test_the_report_configmap_is_created_then_updated_only_if_ours(
    kmock: Any, kube: Any
) -> None:
    kmock.resources["v1/configmaps"] = kmock.ResourceInfo(namespaced=True)
    await kube.apply_config_map(config_map("uid-1", "first"), "uid-1")
    assert kmock.objects["v1/configmaps", "ns", "q1-report"]["data"] == {"report.md": "first"}
    await kube.apply_config_map(config_map("uid-1", "second"), "uid-1")  # a retried write
    assert kmock.objects["v1/configmaps", "ns", "q1-report"]["data"] == {"report.md": "second"}
    with pytest.raises(ConfigMapNotOwned):
        await kube.apply_config_map(config_map("uid-2", "theirs"), "uid-2")
    assert kmock.objects["v1/configmaps", "ns", "q1-report"]["data"] == {"report.md": "second"}


async def test_status_patches_and_deletion(kmock: Any, kube: Any) -> None:
    kmock.objects[AGENTRUNS, "ns", "q1"] = {
        "metadata": {"name": "q1", "namespace": "ns"},
        "spec": {},
    }
    await kube.patch_status(ObjectRef("ns", "q1"), {"phase": "Running"})
    assert kmock.objects[AGENTRUNS, "ns", "q1"]["status"] == {"phase": "Running"}
    (patch,) = list(kmock["patch"])
    assert patch.url.path.endswith("/agentruns/q1/status")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    await kube.delete_agentrun(ObjectRef("ns", "q1"), "uid-1")
    with pytest.raises(ObjectGone):
        await kube.patch_status(ObjectRef("ns", "q1"), {"phase": "Failed"})
    await kube.delete_agentrun(ObjectRef("ns", "q1"), "uid-1")  # already gone: fine


async def test_failures_that_can_pass_are_retryable(kmock: Any, kube: Any) -> None:
    kmock.objects[AGENTRUNS, "ns", "q1"] = {"metadata": {"name": "q1", "namespace": "ns"}}
    kmock["patch"] << 503
    with pytest.raises(KubernetesUnavailable):
        await kube.patch_status(ObjectRef("ns", "q1"), {"phase": "Running"})
    with pytest.raises(KubernetesUnavailable, match="not logged in"):
        await KubernetesClient().patch_status(ObjectRef("ns", "q1"), {})
