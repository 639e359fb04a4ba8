"""The chart lints, installs with the real Helm engine, and every object it sends is valid for
Kubernetes 1.31-1.35 (strict schemas) or for the monitoring and KEDA CRDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "podcrew"
WARNING = 2  # lint severities: 1 info, 2 warning, 3 error


def test_lint_is_clean(
    helm_engine: Any, chartlib: Any, values_file: str, kube_version: str
) -> None:
    report = helm_engine.lint(chartlib.load_values(chartlib.CI_DIR / values_file), kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], problems or report["errors"]


def test_every_rendered_object_is_valid(
    helm_engine: Any, chartlib: Any, values_file: str, kube_version: str
) -> None:
    release = helm_engine.release(values_file, kube_version)
    assert release.objects, "the install applied nothing"
    crd_validators = {
        key: jsonschema.Draft7Validator(json.loads((chartlib.SCHEMA_DIR / name).read_text()))
        for key, name in chartlib.CRD_SCHEMAS.items()
    }
    failures = []
    for obj in release.all():
        # Helm's own labels and annotations are part of what the cluster receives.
        key = (obj["apiVersion"], obj["kind"])
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if key in crd_validators:
            errors = sorted(crd_validators[key].iter_errors(obj), key=lambda e: list(e.path))
            failures += [f"{where}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors]
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{where}: {'/'.join(map(str, exc.path))}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_validation_catches_a_bad_field(chartlib: Any, helm_engine: Any) -> None:
    """The validators above are strict: an unknown field fails, in core kinds and in CRDs."""
    release = helm_engine.release("keda-values.yaml")
    deployment = json.loads(json.dumps(release.get("Deployment", "worker")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, chartlib.KUBE_VERSIONS[0], strict=True)
    scaled = json.loads(json.dumps(release.get("ScaledObject", "worker")))
    scaled["spec"]["minReplicas"] = 0
    schema = json.loads((chartlib.SCHEMA_DIR / "scaledobject.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema, cls=jsonschema.Draft7Validator)


def test_install_refuses_a_cluster_older_than_kube_version(helm_engine: Any) -> None:
    with pytest.raises(Exception, match=r"(?i)kubeVersion|kubernetes version|incompatible"):
        helm_engine.install({}, kube_version="1.24.0")


@pytest.mark.parametrize(
    "values",
    [
        {"api": {"replicaz": 3}},
        {"autoscalling": {"mode": "keda"}},
        {"worker": {"autoscaling": {"minReplica": 0}}},
        {"redis": {"persistance": {"enabled": False}}},
        {"llm": {"provider": "openai"}},
        {"researchAgent": {"config": {"max_step": 3}}},
        {"webhooks": {"config": {"secret": "a-signing-secret-in-values"}}},
        {"webhooks": {"egress": {"extraCidr": ["10.0.0.0/8"]}}},
    ],
    ids=[
        "component-key",
        "top-level-key",
        "nested-key",
        "redis-key",
        "enum",
        "config-key",
        "webhook-secret-in-values",
        "webhook-egress-key",
    ],
)
def test_schema_rejects_misspelled_keys(helm_engine: Any, values: dict[str, Any]) -> None:
    report = helm_engine.lint(values)
    assert any(
        "schema" in e or "not allowed" in e or "value must be" in e for e in report["errors"]
    ), report
    with pytest.raises(Exception, match="schema"):
        helm_engine.install(values)


def test_values_yaml_satisfies_its_schema_both_ways() -> None:
    """values.yaml validates, and every property of a closed object in the schema has a
    default in values.yaml (so each one is documented there)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(values)

    missing: list[str] = []
    # Shapes reused from Kubernetes (resources, HPA behavior) may have keys we leave unset.
    passthrough = {"resources", "behavior", "scalingRules", "envList", "stringMap"}

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in passthrough:
                return
            node = schema["definitions"][name]
        if (
            node.get("additionalProperties") is False
            and "properties" in node
            and isinstance(value, dict)
        ):
            for key, sub in node["properties"].items():
                if key not in value:
                    missing.append(f"{path}{key}")
                else:
                    walk(sub, value[key], f"{path}{key}.")

    walk(schema, values, "")
    # `type` of the worker/agent Services is not configurable; the api's is, and is set.
    assert not missing, f"schema properties without a default in values.yaml: {missing}"


def test_every_value_is_documented() -> None:
    """helm-docs style: each key of a closed values shape has a `# --` comment above it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    undocumented: list[str] = []

    def documented(line_no: int) -> bool:
        i = line_no - 1
        while i >= 0 and lines[i].lstrip().startswith("#"):
            if lines[i].lstrip().startswith("# --"):
                return True
            i -= 1
        return False

    def walk(node: yaml.Node, sch: dict[str, Any], path: str) -> None:
        if "$ref" in sch:
            sch = schema["definitions"][sch["$ref"].rsplit("/", 1)[-1]]
        if not isinstance(node, yaml.MappingNode) or "properties" not in sch:
            return
        for key_node, value_node in node.value:
            key = key_node.value
            sub = sch["properties"].get(key, {})
            is_section = isinstance(value_node, yaml.MappingNode) and "properties" in (
                schema["definitions"][sub["$ref"].rsplit("/", 1)[-1]] if "$ref" in sub else sub
            )
            if documented(key_node.start_mark.line):
                continue  # documented as a whole, as helm-docs reads it
            if not is_section:
                undocumented.append(f"{path}{key} (line {key_node.start_mark.line + 1})")
            # A section (a closed map) needs no comment of its own, but each of its keys does.
            walk(value_node, sub, f"{path}{key}.")

    walk(root, schema, "")
    assert not undocumented, "values without a `# --` comment: " + ", ".join(undocumented)
