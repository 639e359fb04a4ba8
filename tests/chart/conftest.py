"""The chart under the real Helm engine, with no cluster.

Helm v4's Go library (the `helm-python-sdk` wheel, no helm binary) lints the chart, renders it
offline, and installs it into a recording Kubernetes API server on loopback. The server answers
discovery (`/version`, `/api`, `/apis`, one APIResourceList per group/version the chart uses,
an OpenAPI v3 index that announces server-side field validation), says "not found" to every
lookup, accepts Helm's protobuf release Secret, and records every object Helm applies: those are
the objects a cluster would receive, after Helm's schema validation, kubeVersion check, ordering
and labelling. The tests then validate each one against the Kubernetes or CRD schemas.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "podcrew"
CI_DIR = CHART_DIR / "ci"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RELEASE = "rel"
NAMESPACE = "podcrew"
# The Kubernetes minor versions the chart is validated against (kubernetes-validate has them all).
KUBE_VERSIONS = ("1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0")

# Every kind the chart may render: (group/version, plural, kind, namespaced). An object of any
# other kind makes Helm's install fail with "no matches for kind", as a real cluster would.
RESOURCES: tuple[tuple[str, str, str, bool], ...] = (
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "services", "Service", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "pods", "Pod", True),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("v1", "namespaces", "Namespace", False),
    ("apps/v1", "deployments", "Deployment", True),
    ("apps/v1", "statefulsets", "StatefulSet", True),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
    ("monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor", True),
    ("monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule", True),
    ("keda.sh/v1alpha1", "scaledobjects", "ScaledObject", True),
    ("keda.sh/v1alpha1", "triggerauthentications", "TriggerAuthentication", True),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False),
)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
}


def ci_values_files() -> list[Path]:
    return sorted(CI_DIR.glob("*-values.yaml"))


def load_values(*files: Path) -> dict[str, Any]:
    """Merge values files the way `helm -f a -f b` does (maps deep-merged, the rest replaced)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    merged: dict[str, Any] = {}
    for f in files:
        merged = merge(merged, yaml.safe_load(f.read_text()) or {})
    return merged


def _group_versions() -> dict[str, list[tuple[str, str, bool]]]:
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for gv, plural, kind, namespaced in RESOURCES:
        out.setdefault(gv, []).append((plural, kind, namespaced))
    return out


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: dict[str, Any] | None


@dataclass
class RecordingAPIServer:
    """A Kubernetes API server that stores nothing and remembers everything it was sent."""

    kube_version: str = KUBE_VERSIONS[0]
    requests: list[Recorded] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: Helm's client reuses connections
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stalls

            def log_message(self, *_: object) -> None:  # quiet
                pass

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, payload = server.answer(self.command, self.path, self.headers, raw)
                self._send(code, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            # Go's client opens many discovery connections at once; the default backlog of 5
            # drops SYNs and costs a 1 s retransmit.
            request_queue_size = 128

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def kubeconfig(self) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "recorder", "cluster": {"server": self.url}}],
                "users": [{"name": "recorder", "user": {"token": "recorder"}}],
                "contexts": [
                    {
                        "name": "recorder",
                        "context": {
                            "cluster": "recorder",
                            "user": "recorder",
                            "namespace": NAMESPACE,
                        },
                    }
                ],
                "current-context": "recorder",
            }
        )

    # --- the API --------------------------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: Any, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        path = target.split("?", 1)[0]
        gvs = _group_versions()
        if method == "GET":
            if path == "/version":
                major, minor, _ = self.kube_version.split(".")
                return 200, {
                    "major": major,
                    "minor": minor,
                    "gitVersion": f"v{self.kube_version}",
                    "platform": "linux/amd64",
                }
            if path == "/api":
                return 200, {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [],
                }
            if path == "/apis":
                groups: dict[str, list[str]] = {}
                for gv in gvs:
                    if "/" in gv:
                        group, version = gv.split("/")
                        groups.setdefault(group, []).append(version)
                return 200, {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                        }
                        for g, vs in groups.items()
                    ],
                }
            gv = path.removeprefix("/api/").removeprefix("/apis/")
            if path in ("/api/v1", f"/apis/{gv}") and gv in gvs:
                return 200, {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": gv,
                    "resources": [
                        {
                            "name": plural,
                            "singularName": kind.lower(),
                            "namespaced": namespaced,
                            "kind": kind,
                            "verbs": [
                                "create",
                                "delete",
                                "get",
                                "list",
                                "patch",
                                "update",
                                "watch",
                            ],
                        }
                        for plural, kind, namespaced in gvs[gv]
                    ],
                }
            if path == "/openapi/v3":
                return 200, {
                    "paths": {
                        ("api/v1" if gv == "v1" else f"apis/{gv}"): {
                            "serverRelativeURL": f"/openapi/v3/{'api/v1' if gv == 'v1' else 'apis/' + gv}?hash=0"
                        }
                        for gv in gvs
                    }
                }
            if path.startswith("/openapi/v3/"):
                return self._openapi(path.removeprefix("/openapi/v3/"), gvs)
            if path.endswith("/secrets") and "labelSelector" in target:
                # Helm asks whether the release exists: it never does here.
                return 200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []}
            return 404, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
            }
        content_type = headers.get("Content-Type", "")
        if "protobuf" in content_type:
            # Helm's release record (a Secret, protobuf-encoded): acknowledge, don't decode.
            self.requests.append(Recorded(method, target, content_type, None))
            return 201, {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {"name": "sh.helm.release", "namespace": NAMESPACE},
            }
        if method in ("POST", "PATCH", "PUT") and (
            "json" in content_type or "yaml" in content_type
        ):
            body = json.loads(raw) if raw.lstrip().startswith(b"{") else yaml.safe_load(raw)
            self.requests.append(Recorded(method, target, content_type, body))
            return 201, body
        self.unexpected.append(f"{method} {target} {content_type}")
        return 405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405}

    @staticmethod
    def _openapi(
        gv_path: str, gvs: dict[str, list[tuple[str, str, bool]]]
    ) -> tuple[int, dict[str, Any]]:
        """One PATCH operation per kind that accepts `fieldValidation`, so Helm's client leaves
        field validation to the server (Strict) instead of downloading full schemas."""
        gv = gv_path.removeprefix("api/").removeprefix("apis/")
        if gv not in gvs:
            return 404, {}
        group, version = gv.split("/") if "/" in gv else ("", gv)
        paths = {}
        for plural, kind, namespaced in gvs[gv]:
            scope = "namespaces/{namespace}/" if namespaced else ""
            paths[f"/{gv_path}/{scope}{plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {
                        "group": group,
                        "version": version,
                        "kind": kind,
                    },
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {},
                }
            }
        return 200, {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v0"},
            "paths": paths,
        }

    def applied(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.body is not None]


@dataclass
class Release:
    """What one `helm install` sent to the cluster, plus its test hooks and NOTES. The CRDs
    Helm installs from `crds/` (never templated, so without release labels) are kept apart."""

    objects: list[dict[str, Any]]
    hooks: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]
    crds: list[dict[str, Any]] = field(default_factory=list)

    def all(self) -> list[dict[str, Any]]:
        return self.objects + self.hooks

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.all() if o["kind"] == kind]

    def get(self, kind: str, component: str) -> dict[str, Any]:
        found = [
            o
            for o in self.of_kind(kind)
            if o["metadata"]["name"] == f"{RELEASE}-podcrew-{component}"
        ]
        assert len(found) == 1, (
            f"expected one {kind} {component}, got {[o['metadata']['name'] for o in self.of_kind(kind)]}"
        )
        return found[0]

    def has(self, kind: str, component: str) -> bool:
        return any(
            o["metadata"]["name"] == f"{RELEASE}-podcrew-{component}" for o in self.of_kind(kind)
        )


class HelmEngine:
    """Helm v4 (Go, in-process) driven through helm-python-sdk."""

    def __init__(self, helm: Any, server: RecordingAPIServer) -> None:
        self.helm = helm
        self.server = server
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], Release] = {}

    def lint(
        self, values: dict[str, Any] | None = None, kube_version: str = KUBE_VERSIONS[0]
    ) -> dict[str, Any]:
        report: dict[str, Any] = self.helm.lint(
            str(CHART_DIR),
            values,
            strict=True,
            namespace=NAMESPACE,
            kube_version=f"v{kube_version}",
        )
        return report

    def render(self, values: dict[str, Any] | None = None) -> dict[str, str]:
        """Offline render (like `helm template`): template path -> text, NOTES.txt included."""
        with self.helm.Chart.load(str(CHART_DIR)) as chart:
            rendered: dict[str, str] = chart.render(
                values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True
            )
        return rendered

    def install(
        self, values: dict[str, Any] | None = None, kube_version: str = KUBE_VERSIONS[0]
    ) -> Release:
        """A real install against the recording API server reporting `kube_version`."""
        values = values or {}
        with self._lock:
            self.server.kube_version = kube_version
            self.server.requests.clear()
            with self.helm.Config(
                kubeconfig_content=self.server.kubeconfig(),
                namespace=NAMESPACE,
                qps=1000,
                burst_limit=1000,
            ) as cfg:
                cfg.install(str(CHART_DIR), RELEASE, values, namespace=NAMESPACE, timeout=60)
            applied = self.server.applied()
        crds = [o for o in applied if o["kind"] == "CustomResourceDefinition"]
        objects = [o for o in applied if o["kind"] != "CustomResourceDefinition"]
        rendered = self.render(values)
        hooks = [
            doc
            for path, text in rendered.items()
            if "/templates/tests/" in path
            for doc in yaml.safe_load_all(text)
            if doc
        ]
        notes = next((text for path, text in rendered.items() if path.endswith("NOTES.txt")), "")
        return Release(objects=objects, hooks=hooks, notes=notes, values=values, crds=crds)

    def release(self, values_file: str, kube_version: str = KUBE_VERSIONS[0]) -> Release:
        """Install of one ci/ values file, cached for the session."""
        key = (values_file, kube_version)
        if key not in self._cache:
            self._cache[key] = self.install(load_values(CI_DIR / values_file), kube_version)
        return self._cache[key]


@pytest.fixture(scope="session")
def helm_engine() -> Iterator[HelmEngine]:
    home = tempfile.TemporaryDirectory(prefix="podcrew-helm-")
    # Helm's cache and config go to a throwaway home: set before the Go runtime starts.
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        os.environ[var] = str(Path(home.name) / var.lower())
    try:
        import helm_python
    except ImportError as exc:  # pragma: no cover - an install problem, not a chart problem
        raise RuntimeError(
            "the chart tests need the Helm engine: `uv sync` installs helm-python-sdk "
            "(dev dependency) — see docs/deploy.md"
        ) from exc
    server = RecordingAPIServer()
    server.start()
    try:
        yield HelmEngine(helm_python, server)
    finally:
        server.stop()
        home.cleanup()
    assert not server.unexpected, (
        f"Helm sent requests the recorder did not expect: {server.unexpected}"
    )


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload and pod."""
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["spec"]))
    return out


def secret_mounts(container: dict[str, Any], release: Release) -> dict[str, dict[str, Any]]:
    """mountPath -> the Secret volume mounted there, for a container of one of the release's
    pods (found by identity: the container is the object the release holds)."""
    for _, spec in pod_specs(release.all()):
        if any(c is container for c in spec["containers"]):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            return {
                m["mountPath"]: volumes[m["name"]]["secret"]
                for m in container.get("volumeMounts", [])
                if "secret" in volumes.get(m["name"], {})
            }
    raise AssertionError(f"container {container.get('name')} is not in the release")


def env_of(container: dict[str, Any], release: Release) -> dict[str, Any]:
    """A container's environment: ConfigMap values from envFrom, then `env` entries (value or
    valueFrom), as the kubelet composes them. A `<NAME>_FILE` pointing into a mounted Secret
    also gives `<NAME>` as {"secretFile": {"name": secret, "key": key}}: what the process reads."""
    env: dict[str, Any] = {}
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in release.of_kind("ConfigMap")}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    mounts = secret_mounts(container, release)
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
        directory, _, file = str(item.get("value", "")).rpartition("/")
        if item["name"].endswith("_FILE") and directory in mounts:
            secret = mounts[directory]
            (entry,) = [i for i in secret["items"] if i["path"] == file]
            env[item["name"].removesuffix("_FILE")] = {
                "secretFile": {"name": secret["secretName"], "key": entry["key"]}
            }
    return env


def component_env(release: Release, component: str) -> dict[str, Any]:
    """The environment (env_of) of the one container of a component's Deployment."""
    (container,) = release.get("Deployment", component)["spec"]["template"]["spec"]["containers"]
    return env_of(container, release)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`values_file` runs a test once per ci/*-values.yaml; `kube_version` once per version."""
    if "values_file" in metafunc.fixturenames:
        metafunc.parametrize("values_file", [f.name for f in ci_values_files()])
    if "kube_version" in metafunc.fixturenames:
        metafunc.parametrize("kube_version", KUBE_VERSIONS)


@pytest.fixture(scope="session")
def chartlib() -> Any:
    """This module, for the tests' shared helpers and constants (test modules cannot import
    conftest under --import-mode=importlib)."""
    return sys.modules[__name__]
