"""The images, proven by running the whole pipeline as containers.

Builds the air-gapped base (`scripts/build-base-image.sh`, reused when present) and every
service image on top of it from the one Dockerfile (`scripts/build-images.sh`), then starts research agent, writer
agent, api and worker as containers the way a cluster runs them: read-only root filesystem
with a tmpfs at /tmp, uid 10001, no capabilities. Redis is a `redis-server` process.
Everything uses the host network on distinct loopback ports: the daemon runs without a bridge
(`scripts/ensure-docker.sh`), so no private address range is involved.

Without a Docker daemon the tests fail, never skip: `make test` starts one first
(scripts/ensure-test-deps.sh), and the images are what the proof is about.

Env: PODCREW_BASE_IMAGE (default podcrew/base:bookworm, built when missing; any other value is
used as given), PODCREW_DEBIAN_MIRROR (the mirror the base is built from).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podcrew_cli.stack import LOOPBACK, free_port, redis_server

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
AIR_GAPPED_BASE = "podcrew/base:bookworm"
# Another base (python:3.12-slim where a registry is reachable) is used as given, not built.
BASE_IMAGE = os.environ.get("PODCREW_BASE_IMAGE", AIR_GAPPED_BASE)
TAG = "containers-test"
SERVICES = ("orchestrator", "research-agent", "writer-agent", "operator")
MEMBERS = (
    "podcrew_core",
    "podcrew_simulator",
    "podcrew_cli",
    "podcrew_client",
    "podcrew_kb",
    "podcrew_eval",
    "podcrew_orchestrator",
    "podcrew_research",
    "podcrew_writer",
    "podcrew_operator",
)
# Which workspace members each image may contain, and nothing else.
EXPECTED_MEMBERS = {
    # The command line talks through the client and scores reports (podcrew_client,
    # podcrew_eval); the semantic cache embeds (podcrew_kb).
    "orchestrator": {
        "podcrew_core",
        "podcrew_simulator",
        "podcrew_cli",
        "podcrew_client",
        "podcrew_kb",
        "podcrew_eval",
        "podcrew_orchestrator",
    },
    "research-agent": {"podcrew_core", "podcrew_kb", "podcrew_research"},
    "writer-agent": {"podcrew_core", "podcrew_writer"},
    "operator": {"podcrew_core", "podcrew_operator"},
}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HARDENING = [
    "--network=host",
    "--read-only",
    "--tmpfs=/tmp:rw,noexec,nosuid,size=64m",
    "--user=10001",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
]
# The baked-in HEALTHCHECK command, probed every second instead of every 15 s.
FAST_HEALTHCHECK = ["--health-interval=1s", "--health-start-period=30s"]


def image(service: str) -> str:
    return f"podcrew/{service}:{TAG}"


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def run_script(argv: list[str], timeout: float) -> float:
    """Run one of our scripts with its output on the terminal; returns seconds taken."""
    start = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}"
    return time.monotonic() - start


def require_docker() -> None:
    """Fail with a plain reason when no daemon can be used."""
    problem = None
    if shutil.which("docker") is None:
        problem = "the docker CLI is not on PATH"
    else:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False)
        if info.returncode != 0:
            problem = f"no Docker daemon answers `docker info` ({info.stderr.strip()[:200]})"
    if problem is None:
        return
    pytest.fail(problem + "; scripts/ensure-docker.sh installs and starts one (make test runs it)")


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The base (reused when present) and every service image, built with the layer cache."""
    require_docker()
    base_s = 0.0
    if BASE_IMAGE == AIR_GAPPED_BASE:
        base_argv = ["scripts/build-base-image.sh", "--tag", BASE_IMAGE]
        if HOST_CA_BUNDLE.is_file():
            # A TLS-intercepting proxy between the build and PyPI is trusted through the
            # host's bundle; on a machine without one this only repeats the public roots.
            base_argv += ["--ca-bundle", str(HOST_CA_BUNDLE)]
        if mirror := os.environ.get("PODCREW_DEBIAN_MIRROR"):
            base_argv += ["--mirror", mirror]
        base_s = run_script(base_argv, timeout=900)
    build_s = run_script(
        ["scripts/build-images.sh", "--base-image", BASE_IMAGE, "--tag", TAG, *SERVICES],
        timeout=1500,
    )
    print(f"\nbase image: {base_s:.0f}s, service images: {build_s:.0f}s")
    for name in (BASE_IMAGE, *(image(s) for s in SERVICES)):
        size = int(docker("image", "inspect", "--format", "{{.Size}}", name).stdout)
        print(f"{name:<40} {size / 1e6:6.0f} MB")
    return {s: image(s) for s in SERVICES}


class Containers:
    """Containers started by one test, removed at its end; their logs go into failures."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(
        self, name: str, img: str, env: dict[str, str], *args: str, options: tuple[str, ...] = ()
    ) -> str:
        full = f"podcrew-ct-{name}-{uuid.uuid4().hex[:8]}"
        env_args = [f"--env={k}={v}" for k, v in env.items()]
        options = options or tuple(FAST_HEALTHCHECK)
        docker("run", "--detach", f"--name={full}", *HARDENING, *options, *env_args, img, *args)
        self.names.append(full)
        return full

    def state(self, name: str) -> tuple[str, str]:
        """(status, health); health is "none" for a container without a healthcheck."""
        health = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        out = docker("inspect", "--format", "{{.State.Status}} " + health, name).stdout.split()
        return out[0], out[1]

    def wait_healthy(self, timeout_s: float = 60) -> None:
        """Every container running and reported healthy by its own HEALTHCHECK."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.names)
        while pending:
            for name in list(pending):
                status, health = self.state(name)
                assert status == "running", f"{name} is {status}:\n{self.logs(name)}"
                if health == "healthy":
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.logs(n)}" for n in pending)
                raise AssertionError(f"not healthy after {timeout_s:.0f}s: {pending}\n{logs}")
            time.sleep(0.2)

    def logs(self, name: str) -> str:
        result = docker("logs", "--tail=40", name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "--force", "--volumes", name, check=False)


@pytest.fixture
def containers() -> Iterator[Containers]:
    started = Containers()
    try:
        yield started
    finally:
        started.remove()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path, "--appendonly", "no") as url:
        yield url


def test_each_image_holds_only_its_members_and_runs_as_10001(images: dict[str, str]) -> None:
    probe = (
        "import importlib.util as u, os, sys; "
        f"print(' '.join(m for m in {MEMBERS!r} if u.find_spec(m))); print(os.getuid())"
    )
    for service, img in images.items():
        config = docker(
            "image", "inspect", "--format", "{{.Config.User}}|{{.Config.Healthcheck}}", img
        )
        user, healthcheck = config.stdout.strip().split("|", 1)
        assert user == "10001:10001", (service, user)
        assert "/healthz" in healthcheck, (service, healthcheck)
        # No --user here: the image's own default must already be unprivileged.
        result = docker(
            "run", "--rm", "--network=host", "--read-only", "--entrypoint=python3", img, "-c", probe
        )
        members, uid = result.stdout.split("\n")[:2]
        assert set(members.split()) == EXPECTED_MEMBERS[service], service
        assert uid == "10001", service


def test_the_orchestrator_image_serves_the_llm_simulator_through_the_cli(
    images: dict[str, str], containers: Containers
) -> None:
    port = free_port()
    name = containers.run(
        "simulator",
        images["orchestrator"],
        {},
        "simulate-llm",
        f"--host={LOOPBACK}",
        f"--port={port}",
        options=("--entrypoint=podcrew", "--no-healthcheck"),
    )
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1.0) as http:
        while True:
            assert containers.state(name)[0] == "running", containers.logs(name)
            try:
                if http.get(f"http://{LOOPBACK}:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, containers.logs(name)
            time.sleep(0.2)


def test_the_pipeline_answers_with_a_cited_report_from_containers(
    images: dict[str, str], containers: Containers, redis_url: str
) -> None:
    api, worker, research, writer = (free_port() for _ in range(4))
    # Ports nobody listens on: each orchestrator mode must health-check its own port, so the
    # worker gets a dead api port and the api a dead worker port (on the host network the
    # other container's port would otherwise answer for a wrong check).
    dead_api, dead_worker = free_port(), free_port()
    common = {
        "PODCREW_REDIS_URL": redis_url,
        "PODCREW_LLM_OFFLINE_LATENCY_S": "0.05",
        # As a cluster runs it: the agents refuse internal calls without the shared token.
        "PODCREW_SERVICE_TOKEN": uuid.uuid4().hex,
    }
    orchestrator = {
        **common,
        "PODCREW_ORCHESTRATOR_HOST": LOOPBACK,
        "PODCREW_ORCHESTRATOR_RESEARCH_URL": f"http://{LOOPBACK}:{research}",
        "PODCREW_ORCHESTRATOR_WRITER_URL": f"http://{LOOPBACK}:{writer}",
    }
    containers.run(
        "research",
        images["research-agent"],
        {**common, "PODCREW_RESEARCH_HOST": LOOPBACK, "PODCREW_RESEARCH_PORT": str(research)},
    )
    containers.run(
        "writer",
        images["writer-agent"],
        {**common, "PODCREW_WRITER_HOST": LOOPBACK, "PODCREW_WRITER_PORT": str(writer)},
    )
    containers.run(
        "api",
        images["orchestrator"],
        {
            **orchestrator,
            "PODCREW_ORCHESTRATOR_PORT": str(api),
            "PODCREW_ORCHESTRATOR_WORKER_PORT": str(dead_worker),
        },
        "api",
    )
    containers.run(
        "worker",
        images["orchestrator"],
        {
            **orchestrator,
            "PODCREW_ORCHESTRATOR_PORT": str(dead_api),
            "PODCREW_ORCHESTRATOR_WORKER_PORT": str(worker),
        },
        "worker",
    )
    containers.wait_healthy()

    with httpx.Client(base_url=f"http://{LOOPBACK}:{api}", timeout=90.0) as http:
        assert http.get(f"http://{LOOPBACK}:{worker}/readyz").status_code == 200
        response = http.post(
            "/v1/runs?wait=60", json={"question": "How do Python generators and iterators work?"}
        )
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "succeeded", run
    report, sources = run["result"]["report"], run["result"]["sources"]
    assert "[1]" in report, report
    assert sources, run
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", report)}
    assert cited <= {s["number"] for s in sources}, "a citation points at no source"
    assert all(s["source"]["id"].startswith("kb:") for s in sources), "not from the corpus"
    for name in containers.names:
        assert containers.state(name)[0] == "running", containers.logs(name)
