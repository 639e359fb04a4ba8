"""skaffold.yaml, the kind cluster, the add-on values and the example values fit the chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podcrew"
# Chart values examples (k8s/examples/agentrun.yaml is an AgentRun, tested in tests/operator).
EXAMPLES = sorted((ROOT / "k8s" / "examples").glob("values-*.yaml"))


def _skaffold() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def _has_value(path: str) -> bool:
    node: Any = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _releases(config: dict[str, Any]) -> list[dict[str, Any]]:
    releases: list[dict[str, Any]] = config["deploy"]["helm"]["releases"]
    return releases


def test_skaffold_builds_every_image_the_chart_runs() -> None:
    config = _skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14" and config["kind"] == "Config"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart_images = {
        values["orchestrator"]["image"]["repository"],
        values["researchAgent"]["image"]["repository"],
        values["writerAgent"]["image"]["repository"],
        values["operator"]["image"]["repository"],
    }
    for section in [config, *[p for p in config["profiles"] if "build" in p]]:
        artifacts = section["build"]["artifacts"]
        assert {a["image"] for a in artifacts} == chart_images
        for artifact in artifacts:
            dockerfile = ROOT / artifact["context"] / artifact["docker"]["dockerfile"]
            assert dockerfile.is_file(), artifact
            # One Dockerfile: the SERVICE build argument names the image's stage.
            service = artifact["docker"]["buildArgs"]["SERVICE"]
            assert artifact["image"].endswith(f"/{service}"), artifact
            assert f"\nFROM runtime AS {service}\n" in dockerfile.read_text(), artifact


@pytest.mark.parametrize("where", ["default", "kind"])
def test_skaffold_wires_each_built_image_into_the_chart(where: str) -> None:
    config = _skaffold()
    section = (
        config if where == "default" else next(p for p in config["profiles"] if p["name"] == where)
    )
    artifacts = {
        re.sub(r"[^A-Za-z0-9]", "_", a["image"]): a["image"] for a in config["build"]["artifacts"]
    }
    (release,) = _releases(section)
    assert (ROOT / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    wired = set()
    for key, template in templates.items():
        assert _has_value(key), f"setValueTemplates sets {key}, which values.yaml does not have"
        (var,) = re.findall(r"\{\{\.IMAGE_(?:REPO|TAG|DIGEST)_([A-Za-z0-9_]+)\}\}", template)
        assert var in artifacts, f"{key}: {template} names no artifact"
        wired.add(artifacts[var])
    assert wired == set(artifacts.values())
    for values_file in release.get("valuesFiles", []):
        assert (ROOT / values_file).is_file(), values_file


def test_kind_profile_targets_the_kind_cluster() -> None:
    config = _skaffold()
    kind = next(p for p in config["profiles"] if p["name"] == "kind")
    cluster = yaml.safe_load((ROOT / "k8s" / "kind" / "cluster.yaml").read_text())
    assert kind["deploy"]["kubeContext"] == f"kind-{cluster['name']}"
    assert kind["build"]["local"]["push"] is False
    assert {"kubeContext": f"kind-{cluster['name']}"} in kind["activation"]


def test_kind_cluster_pins_its_node_image() -> None:
    cluster = yaml.safe_load((ROOT / "k8s" / "kind" / "cluster.yaml").read_text())
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cluster["kind"] == "Cluster"
    images = {node["image"] for node in cluster["nodes"]}
    assert len(images) == 1
    (image,) = images
    match = re.fullmatch(r"kindest/node:v(1\.\d+)\.\d+(@sha256:[0-9a-f]{64})?", image)
    assert match, image
    # The cluster runs a Kubernetes the chart is validated against.
    tested = {
        ".".join(v.split(".")[:2]) for v in ("1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0")
    }
    assert match.group(1) in tested
    ports = {
        m["containerPort"] for node in cluster["nodes"] for m in node.get("extraPortMappings", [])
    }
    kind_values = yaml.safe_load((ROOT / "k8s" / "examples" / "values-kind.yaml").read_text())
    assert kind_values["api"]["service"]["nodePort"] in ports


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_values_install_and_validate(
    helm_engine: Any, chartlib: Any, example: Path
) -> None:
    release = helm_engine.install(
        chartlib.load_values(example), kube_version=chartlib.KUBE_VERSIONS[-1]
    )
    crds = {
        k: json.loads((chartlib.SCHEMA_DIR / v).read_text())
        for k, v in chartlib.CRD_SCHEMAS.items()
    }
    for obj in release.all():
        key = (obj["apiVersion"], obj["kind"])
        if key in crds:
            jsonschema.validate(obj, crds[key], cls=jsonschema.Draft7Validator)
        else:
            kubernetes_validate.validate(obj, chartlib.KUBE_VERSIONS[-1], strict=True)


def test_addon_values_are_wired_to_the_chart_defaults() -> None:
    addons = ROOT / "k8s" / "addons"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    stack = yaml.safe_load((addons / "kube-prometheus-stack-values.yaml").read_text())
    spec = stack["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    # The chart's default KEDA Prometheus address is this release's Prometheus service.
    assert values["autoscaling"]["prometheusServerAddress"].startswith(
        f"http://{stack['fullnameOverride']}-prometheus.monitoring.svc"
    )
    adapter = yaml.safe_load((addons / "prometheus-adapter-values.yaml").read_text())
    assert adapter["prometheus"]["url"].startswith(
        f"http://{stack['fullnameOverride']}-prometheus."
    )
    keda = yaml.safe_load((addons / "keda-values.yaml").read_text())
    assert keda["crds"]["install"] is True
    otel = yaml.safe_load((addons / "otel-collector-values.yaml").read_text())
    assert otel["mode"] == "deployment"
    assert set(otel["config"]["service"]["pipelines"]["traces"]["receivers"]) == {"otlp"}
    assert (
        values["otel"]["endpoint"].endswith(":4318")
        and values["otel"]["protocol"] == "http/protobuf"
    )


def test_deploy_doc_covers_what_it_must() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    for needle in (
        "kind create cluster --config k8s/kind/cluster.yaml",
        "helm test",
        "scripts/build-base-image.sh",
        "serviceMonitorSelectorNilUsesHelmValues",
        "release: kube-prometheus-stack",
        "values-production.yaml",
        "helm upgrade",
    ):
        assert needle in text, needle


def test_chart_metadata_follows_the_conventions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["type"] == "application"
    assert chart["kubeVersion"] == ">=1.25.0-0"
    project = re.search(
        r'^version = "([^"]+)"',
        (ROOT / "services" / "orchestrator" / "pyproject.toml").read_text(),
        re.M,
    )
    assert project and chart["appVersion"] == project.group(1), (
        "appVersion is the release the images are built from"
    )
    assert chart["home"] and chart["sources"] and chart["maintainers"]
    annotations = chart["annotations"]
    for key in (
        "artifacthub.io/license",
        "artifacthub.io/links",
        "artifacthub.io/operator",
        "artifacthub.io/changes",
    ):
        assert annotations.get(key), key
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    listed = {i["image"] for i in yaml.safe_load(annotations["artifacthub.io/images"])}
    defaults = {
        f"{values[k]['image']['repository']}:{values[k]['image']['tag'] or chart['appVersion']}"
        for k in ("orchestrator", "researchAgent", "writerAgent")
    } | {f"{values['redis']['image']['repository']}:{values['redis']['image']['tag']}"}
    assert listed == defaults
