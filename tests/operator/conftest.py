"""The operator against a Kubernetes API emulator and the real podcrew stack, all on loopback.

- The API server is kmock's `KubernetesEmulator` (an in-memory Kubernetes API over HTTP, by
  kopf's author), extended with what a real API server does that the operator relies on:
  server-side metadata (uid, resourceVersion, generation, creationTimestamp, generateName),
  and admission of AgentRuns against the CRD's own `openAPIV3Schema` (422 on a bad spec, as
  with `kubectl apply`). It serves in a thread of its own, so the tests stay synchronous and
  talk to it over HTTP, as kubectl would.
- The orchestrator is the real stack (`podcrew_cli.stack.Stack`) with API keys on, coalescing
  and the result cache off (each AgentRun must be its own run, so a second submission would
  show), and a slow offline LLM so a run lasts long enough to be caught mid-way.
- The operator is the real `podcrew-operator` entry point, a process of its own, logged in
  through a kubeconfig that points at the emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import jsonschema
import kmock
import pytest
import redis
import yaml

from podcrew_cli.stack import LOOPBACK, Service, Stack, StackConfig, free_port

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "podcrew" / "crds" / "agentruns.podcrew.dev.yaml"
GROUP, VERSION, PLURAL = "podcrew.dev", "v1alpha1", "agentruns"
API_KEY = "operator-test-key-" + "0" * 16
FINAL = ("Succeeded", "Failed", "Cancelled")


# --- the CRD's schema, as a validator -------------------------------------------------------


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def to_json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as JSON Schema (draft 4, whose boolean
    `exclusiveMinimum` OpenAPI 3.0 kept). Unknown fields are refused where the schema lists
    properties and does not preserve unknown ones: what `kubectl apply` (strict field
    validation, the default since 1.27) does. The `x-kubernetes-*` and `default` keys have no
    JSON Schema meaning and are dropped."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("default", None)
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def agentrun_validator() -> jsonschema.Draft4Validator:
    (version,) = load_crd()["spec"]["versions"]
    schema = to_json_schema(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


# --- the API server ---------------------------------------------------------------------------


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server behaviour the operator depends on."""

    validators: dict[str, jsonschema.Draft4Validator] = attrs.field(factory=dict)
    # name -> how many more status patches of that AgentRun fail with 503
    failing_status_patches: dict[str, int] = attrs.field(factory=dict)
    _versions: Any = attrs.field(factory=lambda: itertools.count(1))

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        if request.resource is not None:
            if request.action == kmock.action.CREATE and isinstance(data, dict):
                self._admit(request, data)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._update(request, data)
        return await super()._handle(request)

    def _admit(self, request: kmock.Request, obj: dict[str, Any]) -> None:
        assert request.resource is not None
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        validator = self.validators.get(str(request.resource.plural))
        if validator is not None:
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
            if errors:
                causes = "; ".join(
                    f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors
                )
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message=f'{obj.get("kind")} "{meta.get("name")}" is invalid: {causes}',
                    details={"causes": [e.message for e in errors]},
                )
        meta.setdefault("namespace", request.namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1

    def _update(self, request: kmock.Request, patch: Any) -> None:
        if request.subresource == "status":
            left = self.failing_status_patches.get(str(request.name), 0)
            if left:
                self.failing_status_patches[str(request.name)] = left - 1
                raise kmock.KubernetesError(
                    status=503, reason="ServiceUnavailable", message="injected by the test"
                )
        version = str(next(self._versions))
        if isinstance(patch, dict):  # merge patch
            meta = patch.setdefault("metadata", {})
            if isinstance(meta, dict):
                meta["resourceVersion"] = version
        elif isinstance(patch, list):  # JSON patch: kopf tests the resourceVersion first
            self._check_tests(request, patch)
            patch.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})

    def _check_tests(self, request: kmock.Request, ops: list[dict[str, Any]]) -> None:
        """A failed `test` op is 422, as from a real API server (kopf then waits for the next
        event and tries again); kmock alone would answer 500, which kopf retries as is."""
        try:
            current: Any = self.objects[request.resource, request.namespace, str(request.name)].raw
        except KeyError:
            return
        for op in ops:
            if op.get("op") != "test":
                continue
            node = current
            for part in str(op["path"]).strip("/").split("/"):
                node = node.get(part) if isinstance(node, dict) else None
            if node != op.get("value"):
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message=f"the server rejected our request: test of {op['path']} failed",
                )


class Emulator:
    """The API server on a free loopback port, in a thread with its own event loop."""

    def __init__(self) -> None:
        self.server = ApiServer(validators={PLURAL: agentrun_validator()})
        resources = self.server.resources
        resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
            kind="AgentRun",
            singular="agentrun",
            namespaced=True,
            shortnames={"ar"},
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            subresources={"status"},
        )
        # kopf waits for namespaces to be discoverable before it starts any watch, even when
        # it never lists them (a real API server always serves them).
        resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
        )
        for plural, kind in (("configmaps", "ConfigMap"), ("events", "Event")):
            resources[f"v1/{plural}"] = kmock.ResourceInfo(
                kind=kind,
                namespaced=True,
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with self.server, kmock.Server(self.server, host=LOOPBACK) as http:
                self.url = f"http://{LOOPBACK}:{http.port}"
                self._ready.set()
                await self._stop.wait()

        asyncio.run(serve())

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the Kubernetes API emulator did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "operator", "user": {"token": "emulator-token"}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}
                    ],
                    "current-context": "emulator",
                }
            )
        )
        return path


class Kube:
    """What a test does with kubectl, over HTTP to the emulator."""

    def __init__(self, url: str, namespace: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10.0)
        self.namespace = namespace

    def _agentruns(self, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{base}/{name}" if name else base

    def create(self, name: str, **spec: Any) -> httpx.Response:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        return self.http.post(self._agentruns(), json=body)

    def agentrun(self, name: str) -> dict[str, Any] | None:
        response = self.http.get(self._agentruns(name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        obj: dict[str, Any] = response.json()
        return obj

    def delete(self, name: str) -> None:
        self.http.delete(self._agentruns(name)).raise_for_status()

    def config_map(self, name: str) -> dict[str, Any] | None:
        response = self.http.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        obj: dict[str, Any] = response.json()
        return obj

    def events(self, name: str) -> list[dict[str, Any]]:
        response = self.http.get(f"/api/v1/namespaces/{self.namespace}/events")
        response.raise_for_status()
        return [
            e for e in response.json()["items"] if e.get("involvedObject", {}).get("name") == name
        ]

    def wait(
        self, name: str, until: Callable[[dict[str, Any] | None], bool], timeout_s: float = 30.0
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        obj = self.agentrun(name)
        while not until(obj):
            if time.monotonic() > deadline:
                raise AssertionError(f"AgentRun {name} not as expected after {timeout_s}s: {obj}")
            time.sleep(0.05)
            obj = self.agentrun(name)
        return obj

    def wait_phase(self, name: str, *phases: str, timeout_s: float = 30.0) -> dict[str, Any]:
        obj = self.wait(
            name,
            lambda o: o is not None and o.get("status", {}).get("phase") in phases,
            timeout_s,
        )
        assert obj is not None
        return obj

    def wait_gone(self, name: str, timeout_s: float = 30.0) -> None:
        self.wait(name, lambda o: o is None, timeout_s)

    def wait_events(self, name: str, reason: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Events of `reason` about `name` (kopf posts them in the background)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.events(name) if e.get("reason") == reason]
            if found:
                return found
            if time.monotonic() > deadline:
                seen = [(e.get("reason"), e.get("message")) for e in self.events(name)]
                raise AssertionError(f"no {reason} event for {name}; events: {seen}")
            time.sleep(0.05)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind]
    assert len(found) == 1, obj.get("status")
    return found[0]


# --- the orchestrator -------------------------------------------------------------------------


class Orchestrator:
    """The real stack, and what the tests ask it: runs, and how many there are of a question."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(
            base_url=stack.config.api_url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10.0,
        )
        self.redis = redis.Redis.from_url(stack.config.redis_url)

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/runs/{run_id}")
        response.raise_for_status()
        run: dict[str, Any] = response.json()
        return run

    def runs_asking(self, question: str) -> list[str]:
        """Ids of every run the orchestrator holds for this question: the submissions."""
        ids = []
        for key in self.redis.scan_iter(match="podcrew:run:run_*", count=1000):
            if key.count(b":") != 2:  # the run's events, feedback, evaluation: not the run
                continue
            data = self.redis.hget(key, "data")
            if data and json.loads(data)["question"] == question:
                ids.append(json.loads(data)["id"])
        return ids

    def stop_api(self) -> None:
        self.stack.services["api"].stop()

    def start_api(self) -> None:
        api = self.stack.services["api"]
        api.start()
        self.stack.wait_ready([api])

    @property
    def worker(self) -> Service:
        return self.stack.services["worker-0"]


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    server = Emulator()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orchestrator() -> Iterator[Orchestrator]:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    env = {
        "PODCREW_ORCHESTRATOR_API_KEYS": json.dumps([{"tenant": "operator", "sha256": digest}]),
        "PODCREW_ORCHESTRATOR_COALESCE": "false",
        "PODCREW_ORCHESTRATOR_RESULT_CACHE_TTL_S": "0",
        # 8 LLM calls, about 4 in sequence: a run lasts ~2 s, long enough to be seen running.
        "PODCREW_LLM_OFFLINE_LATENCY_S": "0.4",
    }
    with Stack(StackConfig.on_free_ports(env=env)) as stack:
        client = Orchestrator(stack)
        yield client
        client.http.close()
        client.redis.close()


class Operator:
    """`podcrew-operator` as a process, watching one namespace of the emulator."""

    def __init__(
        self,
        emulator: Emulator,
        orchestrator: Orchestrator,
        namespace: str,
        workdir: Path,
        **extra_env: str,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.liveness = f"http://{LOOPBACK}:{self.port}/healthz"
        self.readiness = f"http://{LOOPBACK}:{free_port()}/readyz"
        env = {
            **os.environ,
            "KUBECONFIG": str(emulator.kubeconfig(workdir / "kubeconfig")),
            "PODCREW_OPERATOR_API_URL": orchestrator.stack.config.api_url,
            "PODCREW_OPERATOR_API_KEY": API_KEY,
            "PODCREW_OPERATOR_POLL_INTERVAL_S": "0.2",
            "PODCREW_OPERATOR_POLL_MAX_INTERVAL_S": "0.5",
            "PODCREW_OPERATOR_RETRY_BASE_DELAY_S": "0.3",
            "PODCREW_OPERATOR_RETRY_MAX_DELAY_S": "1.0",
            "PODCREW_OPERATOR_FINALIZER_TIMEOUT_S": "3",
            "PODCREW_OPERATOR_LOG_LEVEL": "INFO",
            "PODCREW_OPERATOR_READINESS_ENDPOINT": self.readiness,
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "podcrew_operator",
            "--namespace",
            namespace,
            "--liveness",
            f"http://{LOOPBACK}:{self.port}/healthz",
        ]
        self.service = Service("operator", argv, env, None, workdir / "operator.log")

    def start(self, timeout_s: float = 30.0) -> None:
        self.service.start()
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.service.running:
                raise RuntimeError(f"the operator exited: {self.log()}")
            try:
                if httpx.get(self.liveness, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator is not alive: {self.log()}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        return self.service.stop(timeout_s=15.0)

    def kill(self) -> None:
        self.service.kill()

    def log(self) -> str:
        return self.service.log_path.read_text()[-6000:]


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kube(emulator: Emulator, namespace: str) -> Iterator[Kube]:
    client = Kube(emulator.url, namespace)
    yield client
    client.http.close()


@pytest.fixture
def make_operator(
    emulator: Emulator, orchestrator: Orchestrator, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., Operator]]:
    """Operators for the test's namespace (extra PODCREW_OPERATOR_* env as keywords); all are
    stopped at the end of the test."""
    started: list[Operator] = []

    def make(**env: str) -> Operator:
        workdir = tmp_path / f"op{len(started)}"
        operator = Operator(emulator, orchestrator, namespace, workdir, **env)
        started.append(operator)
        operator.start()
        return operator

    yield make
    for operator in started:
        operator.stop()


@pytest.fixture
def operator(make_operator: Callable[..., Operator]) -> Operator:
    return make_operator()


@pytest.fixture(scope="session")
def oplib() -> Any:
    """This module, for the tests' shared helpers (test modules cannot import conftest under
    --import-mode=importlib)."""
    return sys.modules[__name__]


def unique_question() -> str:
    return f"How do Python generators work? ({uuid.uuid4().hex[:8]})"


@pytest.fixture
def question() -> str:
    return unique_question()
