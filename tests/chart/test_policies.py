"""Policies every rendering must keep, whatever the values: hardened containers, stable
selectors, one scaler per Deployment, shutdown timings Kubernetes will honour."""

from __future__ import annotations

from typing import Any

import pytest

PODCREW_COMPONENTS = ("api", "worker", "research-agent", "writer-agent")
VERSION_LABELS = ("app.kubernetes.io/version", "helm.sh/chart")


def test_every_container_is_hardened(helm_engine: Any, chartlib: Any, values_file: str) -> None:
    release = helm_engine.release(values_file)
    specs = chartlib.pod_specs(release.all())
    assert specs
    for name, spec in specs:
        pod_sc = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert "resources" in c and c["resources"].get("requests"), where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where} has no writable /tmp"
            volume = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in volume, where
            if "redis" not in c["image"]:
                assert c["image"].startswith("ghcr.io/podcrew/"), where
                assert sc.get("runAsUser", pod_sc.get("runAsUser")) == 10001, where
        assert spec.get("automountServiceAccountToken") is False, name


def test_selectors_never_carry_version_labels(helm_engine: Any, values_file: str) -> None:
    """Selectors are immutable or must match across upgrades: name, instance, component only."""
    release = helm_engine.release(values_file)
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("selector", "podSelector", "labelSelector") and isinstance(value, dict):
                    labels = value.get("matchLabels", value if key == "selector" else {})
                    found.extend(
                        f"{path}.{key}: {label}" for label in VERSION_LABELS if label in labels
                    )
                    if key != "selector" or "matchLabels" in value:
                        assert labels, f"{path}.{key} selects everything"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    for obj in release.all():
        walk(obj, f"{obj['kind']}/{obj['metadata']['name']}")
    assert not found, found
    for d in release.of_kind("Deployment") + release.of_kind("StatefulSet"):
        selector = d["spec"]["selector"]["matchLabels"]
        assert set(selector) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        }
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_every_object_has_the_standard_labels(helm_engine: Any, values_file: str) -> None:
    release = helm_engine.release(values_file)
    for obj in release.all():
        labels = obj["metadata"].get("labels", {})
        for key in (
            "helm.sh/chart",
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
        ):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"


def _scalers(release: Any, deployment: str) -> list[str]:
    hpas = [
        f"HorizontalPodAutoscaler/{o['metadata']['name']}"
        for o in release.of_kind("HorizontalPodAutoscaler")
        if o["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    ]
    scaled = [
        f"ScaledObject/{o['metadata']['name']}"
        for o in release.of_kind("ScaledObject")
        if o["spec"]["scaleTargetRef"]["name"] == deployment
        and o["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    ]
    return hpas + scaled


VALUE_KEYS = {
    "api": "api",
    "worker": "worker",
    "research-agent": "researchAgent",
    "writer-agent": "writerAgent",
}


def _autoscaled(release: Any, component: str) -> bool:
    values = release.values.get(VALUE_KEYS[component], {}).get("autoscaling", {})
    mode = values.get("mode") or release.values.get("autoscaling", {}).get("mode", "keda")
    return bool(values.get("enabled")) and mode != "none"


def test_each_autoscaled_deployment_has_exactly_one_scaler(
    helm_engine: Any, values_file: str
) -> None:
    release = helm_engine.release(values_file)
    for component in PODCREW_COMPONENTS:
        deployment = release.get("Deployment", component)
        scalers = _scalers(release, deployment["metadata"]["name"])
        if _autoscaled(release, component):
            assert len(scalers) == 1, f"{component}: {scalers}"
            assert "replicas" not in deployment["spec"], (
                f"{component} renders replicas under a scaler"
            )
        else:
            assert scalers == [], f"{component}: {scalers}"
            assert deployment["spec"]["replicas"] >= 1


def test_autoscaling_matrix_covers_both_engines(helm_engine: Any) -> None:
    """The ci values exercise KEDA and HPA for every scalable component, and mode none."""
    keda = helm_engine.release("keda-values.yaml")
    hpa = helm_engine.release("hpa-values.yaml")
    assert {o["metadata"]["name"] for o in keda.of_kind("ScaledObject")} == {
        f"rel-podcrew-{c}" for c in PODCREW_COMPONENTS
    }
    assert not keda.of_kind("HorizontalPodAutoscaler")
    assert {o["metadata"]["name"] for o in hpa.of_kind("HorizontalPodAutoscaler")} == {
        f"rel-podcrew-{c}" for c in PODCREW_COMPONENTS
    }
    assert not hpa.of_kind("ScaledObject")
    off = helm_engine.install({"worker": {"autoscaling": {"enabled": True, "mode": "none"}}})
    assert not off.of_kind("ScaledObject") and not off.of_kind("HorizontalPodAutoscaler")
    assert off.get("Deployment", "worker")["spec"]["replicas"] == 2


def test_probes_and_named_ports(helm_engine: Any, values_file: str) -> None:
    release = helm_engine.release(values_file)
    for component in PODCREW_COMPONENTS:
        pod = release.get("Deployment", component)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        service = release.get("Service", component)
        for port in service["spec"]["ports"]:
            assert port["name"] and port["targetPort"] in ports, f"{component}: {port}"
        assert (
            pod.get("topologySpreadConstraints")
            or release.values.get("defaultTopologySpread") is False
        )


GRACEFUL_SHUTDOWN_ENV = {
    "api": "PODCREW_ORCHESTRATOR_GRACEFUL_SHUTDOWN_S",
    "worker": "PODCREW_ORCHESTRATOR_GRACEFUL_SHUTDOWN_S",
    "research-agent": "PODCREW_RESEARCH_GRACEFUL_SHUTDOWN_S",
    "writer-agent": "PODCREW_WRITER_GRACEFUL_SHUTDOWN_S",
}


def test_shutdown_fits_in_the_grace_period(
    helm_engine: Any, chartlib: Any, values_file: str
) -> None:
    """A rolling update loses no run: every Service-backed pod sleeps in preStop while its
    endpoint is removed, then gets its graceful shutdown before SIGKILL, and a new pod is
    ready before an old one goes; the worker (no Service) starts its drain at once and hands
    its runs back before SIGKILL, after up to twice its graceful shutdown (runs, then
    webhooks). Each service is told the graceful shutdown the chart planned for."""
    release = helm_engine.release(values_file)
    for component, var in GRACEFUL_SHUTDOWN_ENV.items():
        deployment = release.get("Deployment", component)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        graceful = float(chartlib.env_of(container, release)[var])
        if component == "worker":
            assert "lifecycle" not in container  # nothing routes to it: no reason to wait
            assert 2 * graceful < pod["terminationGracePeriodSeconds"]
            continue
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and int(command[1]) >= 5, component
        assert int(command[1]) + graceful < pod["terminationGracePeriodSeconds"], component


@pytest.mark.parametrize(
    "values",
    [
        {"worker": {"gracefulShutdownSeconds": 30, "terminationGracePeriodSeconds": 30}},
        # The worker's drain may take twice its graceful shutdown: 2 x 20 does not fit in 35.
        {"worker": {"gracefulShutdownSeconds": 20, "terminationGracePeriodSeconds": 35}},
        {"researchAgent": {"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 30}},
    ],
    ids=["worker-grace", "worker-drain", "agent-prestop"],
)
def test_a_grace_period_too_short_is_refused(helm_engine: Any, values: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="terminationGracePeriodSeconds"):
        helm_engine.install(values)


def test_config_changes_roll_the_pods(helm_engine: Any) -> None:
    """The pod template carries a checksum of its ConfigMap: a changed setting restarts the pods
    that read it, and only those."""
    before = helm_engine.install({})
    after = helm_engine.install({"researchAgent": {"config": {"max_steps": 6}}})

    def checksum(release: Any, component: str) -> str:
        pod = release.get("Deployment", component)["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    assert checksum(before, "research-agent") != checksum(after, "research-agent")
    assert checksum(before, "api") == checksum(after, "api")
    assert after.get("ConfigMap", "research-agent")["data"]["PODCREW_RESEARCH_MAX_STEPS"] == "6"


def test_pdbs_set_only_what_is_given(helm_engine: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    for component in PODCREW_COMPONENTS:
        pdb = release.get("PodDisruptionBudget", component)
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert not helm_engine.release("minimal-values.yaml").of_kind("PodDisruptionBudget")
    with pytest.raises(Exception, match="not both"):
        helm_engine.install({"api": {"pdb": {"minAvailable": 1, "maxUnavailable": 1}}})
