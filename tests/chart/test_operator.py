"""The AgentRun operator in the chart: its CRD, one Recreate replica, least-privilege RBAC, its
own API key and ServiceAccount, and its NetworkPolicies."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

# What the operator does with each resource (services/operator: kopf and clients/kubernetes.py).
MINIMAL_RULES = {
    ("podcrew.dev", "agentruns"): {"list", "watch", "patch", "delete"},
    ("podcrew.dev", "agentruns/status"): {"patch"},
    ("", "configmaps"): {"create", "get", "patch"},
    ("", "events"): {"create"},
}


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_the_crd_is_installed_and_valid(helm_engine: Any, kube_version: str) -> None:
    release = helm_engine.release("default-values.yaml", kube_version)
    (crd,) = release.crds
    assert crd["metadata"]["name"] == "agentruns.podcrew.dev"
    kubernetes_validate.validate(crd, kube_version, strict=True)
    # Installed from crds/ even when the operator is off: AgentRuns stay valid objects.
    off = helm_engine.install({"operator": {"enabled": False}}, kube_version)
    assert [c["metadata"]["name"] for c in off.crds] == ["agentruns.podcrew.dev"]
    assert not [o for o in off.objects if "operator" in o["metadata"]["name"]]


def test_one_replica_replaced_never_rolled(
    helm_engine: Any, chartlib: Any, values_file: str
) -> None:
    release = helm_engine.release(values_file)
    deployment = release.get("Deployment", "operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not release.of_kind("HorizontalPodAutoscaler") or all(
        o["spec"]["scaleTargetRef"]["name"] != "rel-podcrew-operator"
        for o in release.of_kind("HorizontalPodAutoscaler")
    )
    assert all(
        o["spec"]["scaleTargetRef"]["name"] != "rel-podcrew-operator"
        for o in release.of_kind("ScaledObject")
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["podcrew-operator"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    # Readiness is the operator's own endpoint (started, logged in, the api ready).
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "readiness"}
    assert ports == {"liveness": 8080, "readiness": 8081}
    env = chartlib.env_of(container, release)
    assert env["PODCREW_OPERATOR_READINESS_ENDPOINT"] == "http://0.0.0.0:8081/readyz"


def test_liveness_endpoint_and_scope_reach_the_operator(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    env = chartlib.component_env(release, "operator")
    assert env["PODCREW_OPERATOR_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert env["PODCREW_OPERATOR_NAMESPACES"] == '["podcrew"]'
    assert "PODCREW_OPERATOR_CLUSTER_WIDE" not in env
    assert env["PODCREW_OPERATOR_API_URL"] == "http://rel-podcrew-api:8000"
    assert "PODCREW_OPERATOR_API_KEY" not in env
    wide = chartlib.component_env(
        helm_engine.install({"operator": {"clusterWide": True}}), "operator"
    )
    assert wide["PODCREW_OPERATOR_CLUSTER_WIDE"] == "true"
    assert "PODCREW_OPERATOR_NAMESPACES" not in wide


def test_rbac_is_least_privilege(helm_engine: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    role = release.get("Role", "operator")
    assert role["metadata"]["namespace"] == "podcrew"
    assert _rules(role) == MINIMAL_RULES
    assert not release.of_kind("ClusterRole") and not release.of_kind("ClusterRoleBinding")
    binding = release.get("RoleBinding", "operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "rel-podcrew-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-podcrew-operator", "namespace": "podcrew"}
    ]
    # No peering (standalone), no secrets, no update of anything, no wildcards.
    for verbs in _rules(role).values():
        assert "*" not in verbs and "update" not in verbs
    assert not any("kopf" in group or resource == "secrets" for group, resource in _rules(role))

    wide = helm_engine.install({"operator": {"clusterWide": True}})
    cluster_role = wide.get("ClusterRole", "operator")
    assert "namespace" not in cluster_role["metadata"]
    assert _rules(cluster_role) == MINIMAL_RULES
    assert wide.get("ClusterRoleBinding", "operator")["roleRef"]["kind"] == "ClusterRole"
    assert not wide.of_kind("Role") and not wide.of_kind("RoleBinding")


def test_only_the_operator_pod_gets_an_api_token(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    account = release.get("ServiceAccount", "operator")
    assert account["automountServiceAccountToken"] is False
    pod = release.get("Deployment", "operator")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-podcrew-operator"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    token = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert token["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == token["name"])
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert {"key": "ca.crt", "path": "ca.crt"} in sources[1]["configMap"]["items"]
    # Every other pod still runs without a token.
    for name, spec in chartlib.pod_specs(release.all()):
        if name != "rel-podcrew-operator":
            assert spec.get("serviceAccountName") != "rel-podcrew-operator", name
            assert not any("projected" in v for v in spec.get("volumes", [])), (
                f"{name} mounts a token"
            )


def test_the_api_key_comes_from_its_own_secret(
    helm_engine: Any, chartlib: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from podcrew_operator.settings import OperatorSettings

    release = helm_engine.install(
        {"operator": {"apiKey": {"existingSecret": "podcrew-operator-key", "secretKey": "key"}}}
    )
    env = chartlib.component_env(release, "operator")
    assert env["PODCREW_OPERATOR_API_KEY"] == {
        "secretFile": {"name": "podcrew-operator-key", "key": "key"}
    }
    mounted = tmp_path / "key"
    mounted.write_text("a-key-from-the-secret\n")
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, str(mounted) if key.endswith("_FILE") else value)
    settings = OperatorSettings()  # what the chart sets is what the operator accepts
    assert settings.namespaces == ["podcrew"]
    assert settings.max_concurrent_runs == 20
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "a-key-from-the-secret"


def test_values_defaults_are_the_operators_defaults() -> None:
    from pathlib import Path

    import yaml

    from podcrew_operator.settings import OperatorSettings

    values = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "charts/podcrew/values.yaml").read_text()
    )
    config = values["operator"]["config"]
    for key, value in config.items():
        assert OperatorSettings.model_fields[key].default == value, key


def test_network_policies_let_the_operator_reach_the_api_and_the_kubernetes_api(
    helm_engine: Any,
) -> None:
    release = helm_engine.release("keda-values.yaml")
    policies = {
        o["metadata"]["name"].removeprefix("rel-podcrew-"): o["spec"]
        for o in release.of_kind("NetworkPolicy")
    }
    operator = policies["operator"]
    assert operator["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in operator
    egress = {
        (
            peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component"),
            p["port"],
        )
        for rule in operator["egress"]
        for peer in rule.get("to", [{}])
        for p in rule["ports"]
    }
    assert {("api", 8000), (None, 443), (None, 6443), (None, 53)} <= egress
    into_api = policies["api-from-operator"]
    assert into_api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    (rule,) = into_api["ingress"]
    assert (
        rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    )
