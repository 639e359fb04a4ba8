"""The Redis topologies the stack can run instead of one redis-server, as real processes: a
primary with a replica and three sentinels, and a Redis Cluster of three primaries with a
replica each. A primary killed with SIGKILL is replaced by its replica, and what was
written before is still there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig
from podcrew_cli.topology import SENTINEL_SERVICE, RedisClusterGroup, RedisGroup, SentinelGroup

from .conftest import FINAL

pytestmark = pytest.mark.integration

G = TypeVar("G", bound=RedisGroup)


def _running(group: G) -> Iterator[G]:
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    yield from _running(SentinelGroup(tmp_path))


@pytest.fixture
def cluster_group(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    yield from _running(RedisClusterGroup(tmp_path))


def test_sentinels_promote_the_replica_when_the_primary_is_killed(
    sentinel_group: SentinelGroup,
) -> None:
    group = sentinel_group
    primary, replica = group.nodes
    assert group.primary() == primary.address
    assert (primary.role(), replica.role()) == ("master", "slave")
    with primary.client() as client:
        client.set("greeting", "hello")
        assert client.wait(1, 5000) == 1
    with replica.client() as client:
        assert client.get("greeting") == "hello"

    killed = group.kill_primary()
    assert killed is primary
    promoted = group.wait_failover(killed, timeout_s=20)

    assert promoted is replica
    assert set(group.reported()) == {replica.address}
    with replica.client() as client:
        assert client.get("greeting") == "hello"
        client.set("after", "failover")
    # What the services are told finds the new primary through the sentinels.
    env = group.env()
    sentinels = [
        (host, int(port))
        for host, port in (item.split(":") for item in env["PODCREW_REDIS_SENTINELS"].split(","))
    ]
    assert env["PODCREW_REDIS_SENTINEL_SERVICE"] == SENTINEL_SERVICE
    discovered = redis.Sentinel(sentinels, socket_timeout=1.0).discover_master(SENTINEL_SERVICE)
    assert discovered == replica.address

    group.restart(killed)
    assert killed.role() == "slave"
    with killed.client() as client:
        assert client.get("after") == "failover"


def test_a_cluster_primary_killed_is_replaced_by_its_replica_and_keeps_its_keys(
    cluster_group: RedisClusterGroup,
) -> None:
    group = cluster_group
    primaries = group.primaries()
    assert len(primaries) == 3
    assert sorted(node.role() or "" for node in group.nodes) == ["master"] * 3 + ["slave"] * 3
    env = group.env()
    assert env["PODCREW_REDIS_MODE"] == "cluster"
    client = RedisCluster.from_url(env["PODCREW_REDIS_URL"], decode_responses=True)
    try:
        keys = {f"run:{index}": f"value-{index}" for index in range(30)}
        for key, value in keys.items():
            client.set(key, value)
        owner = client.get_node_from_key("run:0")
        node = group.node_at((owner.host, owner.port))
        assert node in primaries
        group.wait_until(group.replicated, "replicated", 10)

        killed = group.kill_primary(node)
        promoted = group.wait_failover(killed, timeout_s=20)

        assert promoted is not killed
        assert promoted not in primaries
        assert len(group.primaries()) == 3
        assert {key: client.get(key) for key in keys} == keys
    finally:
        client.close()


def test_a_stack_on_a_sentinel_group_finishes_a_run(tmp_path: Path) -> None:
    config = StackConfig.on_free_ports(
        redis="sentinel", data_dir=tmp_path, env={"PODCREW_LLM_OFFLINE_LATENCY_S": "0.05"}
    )
    with Stack(config) as stack:
        group = stack.redis_group
        assert isinstance(group, SentinelGroup)
        assert "redis" not in stack.services
        assert group.primary() == (LOOPBACK, config.redis_port)
        api_env = stack.services["api"].env
        assert api_env["PODCREW_REDIS_MODE"] == "sentinel"
        assert api_env["PODCREW_REDIS_SENTINELS"] == group.env()["PODCREW_REDIS_SENTINELS"]
        with httpx.Client(base_url=config.api_url, timeout=30.0) as client:
            response = client.post("/v1/runs", json={"question": "How do generators work?"})
            assert response.status_code == 202, response.text
            run_id = response.json()["id"]
            group.wait_until(
                lambda: client.get(f"/v1/runs/{run_id}").json()["status"] in FINAL,
                "run finished",
                60,
            )
            assert client.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
        with group.nodes[1].client() as replica:
            assert replica.keys(f"*{run_id}*")
        codes = stack.stop()
    assert {
        name: code for name, code in codes.items() if "redis" in name or "sentinel" in name
    } == {
        "redis-0": 0,
        "redis-1": 0,
        "sentinel-0": 0,
        "sentinel-1": 0,
        "sentinel-2": 0,
    }
