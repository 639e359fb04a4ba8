"""The chart with an external Redis reached through Sentinel or as a Redis Cluster: what every
service is told (ci/sentinel-values.yaml, ci/cluster-values.yaml), how KEDA keeps scaling the
workers on the run queue, where the NetworkPolicies let the pods go, and the combinations the
schema refuses. The run queue is the stream `<prefix>:runs` through Sentinel, as on one server,
and in a Redis Cluster one stream `{<prefix>:p<i>}:runs` per partition, each in its own slot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

COMPONENTS = ("api", "worker", "research-agent", "writer-agent")
SENTINELS = (
    "redis-sentinel-0.redis.example.internal:26379,"
    "redis-sentinel-1.redis.example.internal:26379,"
    "redis-sentinel-2.redis.example.internal:26379"
)
CLUSTER_SEEDS = (
    "redis-cluster-0.redis.example.internal:7000,"
    "redis-cluster-1.redis.example.internal:7001,"
    "redis-cluster-2.redis.example.internal:7002"
)


def _external_envs(helm_engine: Any, values_file: str, chartlib: Any) -> dict[str, Any]:
    """Each service's environment with an external Redis: no Redis of the chart's own."""
    release = helm_engine.release(values_file)
    assert not release.of_kind("StatefulSet")
    return {c: chartlib.component_env(release, c) for c in COMPONENTS}


def _worker_triggers(release: Any) -> dict[str, dict[str, Any]]:
    triggers = release.get("ScaledObject", "worker")["spec"]["triggers"]
    by_name = {t["name"]: t for t in triggers}
    assert len(by_name) == len(triggers), "KEDA needs each trigger's name to be unique"
    return by_name


def _redis_egress(release: Any, component: str) -> list[dict[str, Any]]:
    """The egress rules of a component's NetworkPolicy that reach Redis (not DNS, not HTTP(S),
    not the agents)."""
    policy = release.get("NetworkPolicy", component)
    others = {53, 80, 443, 8101, 8102, 8200, 4317, 4318}
    return [r for r in policy["spec"]["egress"] if not {p["port"] for p in r["ports"]} & others]


# --- Sentinel ---------------------------------------------------------------------------------


def test_sentinel_settings_reach_every_service(helm_engine: Any, chartlib: Any) -> None:
    for component, env in _external_envs(helm_engine, "sentinel-values.yaml", chartlib).items():
        assert env["PODCREW_REDIS_MODE"] == "sentinel", component
        assert env["PODCREW_REDIS_SENTINELS"] == SENTINELS, component
        assert env["PODCREW_REDIS_SENTINEL_SERVICE"] == "podcrew", component
        # Secrets as files, never in the environment: the sentinels' password and the URL
        # (database number and the data nodes' password).
        assert env["PODCREW_REDIS_SENTINEL_PASSWORD"] == {
            "secretFile": {"name": "podcrew-redis-sentinel", "key": "password"}
        }, component
        assert env["PODCREW_REDIS_URL"] == {
            "secretFile": {"name": "podcrew-redis-url", "key": "url"}
        }, component
        assert env["PODCREW_REDIS_MIN_REPLICAS"] == "1", component
        assert env["PODCREW_REDIS_WAIT_TIMEOUT_MS"] == "500", component


def test_sentinel_needs_no_url_and_no_sentinel_password(helm_engine: Any, chartlib: Any) -> None:
    """The sentinels give the primary's address, so the URL is optional; sentinels without a
    password of their own get no password file, and KEDA no sentinelPassword."""
    release = helm_engine.install(
        {
            "redis": {"enabled": False},
            "externalRedis": {
                "mode": "sentinel",
                "sentinel": {"addresses": ["10.0.0.5:26379"]},
            },
            "worker": {"autoscaling": {"enabled": True, "mode": "keda"}},
        }
    )
    for component in COMPONENTS:
        env = chartlib.component_env(release, component)
        assert "PODCREW_REDIS_URL" not in env, component
        assert "PODCREW_REDIS_SENTINEL_PASSWORD" not in env, component
        assert env["PODCREW_REDIS_SENTINEL_SERVICE"] == "mymaster", component
        assert env["PODCREW_REDIS_MIN_REPLICAS"] == "0", component
    assert not release.of_kind("TriggerAuthentication")
    for trigger in _worker_triggers(release).values():
        assert "authenticationRef" not in trigger


def test_keda_asks_the_sentinels_for_the_primary(helm_engine: Any) -> None:
    release = helm_engine.release("sentinel-values.yaml")
    triggers = _worker_triggers(release)
    assert set(triggers) == {"run-queue-lag", "run-queue-pending"}
    lag, pending = triggers["run-queue-lag"], triggers["run-queue-pending"]
    for trigger in (lag, pending):
        assert trigger["type"] == "redis-sentinel-streams"
        meta = trigger["metadata"]
        assert meta["addresses"] == SENTINELS
        assert meta["sentinelMaster"] == "podcrew"
        # Through Sentinel the key names are the single server's.
        assert meta["stream"] == "podcrew:runs" and meta["consumerGroup"] == "workers"
        assert trigger["authenticationRef"] == {"name": "rel-podcrew-redis-keda"}
    assert lag["metadata"]["lagCount"] == "16" and lag["metadata"]["activationLagCount"] == "0"
    assert pending["metadata"]["pendingEntriesCount"] == "32"
    auth = release.get("TriggerAuthentication", "redis-keda")["spec"]["secretTargetRef"]
    assert auth == [
        {"parameter": "password", "name": "podcrew-redis-password", "key": "password"},
        {"parameter": "sentinelPassword", "name": "podcrew-redis-sentinel", "key": "password"},
    ]


def test_network_policies_open_the_sentinels_and_the_data_nodes(helm_engine: Any) -> None:
    release = helm_engine.release("sentinel-values.yaml")
    for component in COMPONENTS:
        assert _redis_egress(release, component) == [
            {
                "to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}],
                "ports": [
                    {"protocol": "TCP", "port": 6379},
                    {"protocol": "TCP", "port": 26379},
                ],
            }
        ], component


# --- Redis Cluster ----------------------------------------------------------------------------


def test_cluster_settings_reach_every_service(helm_engine: Any, chartlib: Any) -> None:
    envs = _external_envs(helm_engine, "cluster-values.yaml", chartlib)
    for component, env in envs.items():
        assert env["PODCREW_REDIS_MODE"] == "cluster", component
        # One node is enough: the client discovers the others.
        assert env["PODCREW_REDIS_URL"] == "redis://redis-cluster-0.redis.example.internal:7000/0"
        assert env["PODCREW_REDIS_MIN_REPLICAS"] == "1", component
        assert env["PODCREW_REDIS_WAIT_TIMEOUT_MS"] == "1000", component
        assert "PODCREW_REDIS_SENTINELS" not in env, component
    # The api writes to the partitions and the worker reads them all.
    for component in ("api", "worker"):
        assert envs[component]["PODCREW_ORCHESTRATOR_QUEUE_PARTITIONS"] == "8"


def test_keda_watches_every_partition_with_its_share_of_the_target(helm_engine: Any) -> None:
    release = helm_engine.release("cluster-values.yaml")
    triggers = _worker_triggers(release)
    assert len(triggers) == 2 * 8
    for i in range(8):
        lag, pending = triggers[f"run-queue-lag-p{i}"], triggers[f"run-queue-pending-p{i}"]
        for trigger in (lag, pending):
            assert trigger["type"] == "redis-cluster-streams"
            meta = trigger["metadata"]
            assert meta["stream"] == f"{{podcrew:p{i}}}:runs"
            assert meta["consumerGroup"] == "workers"
            assert meta["addresses"] == CLUSTER_SEEDS
            # A cluster has only database 0.
            assert "databaseIndex" not in meta
            assert trigger["authenticationRef"] == {"name": "rel-podcrew-redis-keda"}
        # 16 undelivered runs and 32 executing per replica over 8 evenly filled partitions.
        assert lag["metadata"]["lagCount"] == "2"
        assert pending["metadata"]["pendingEntriesCount"] == "4"
    assert release.get("TriggerAuthentication", "redis-keda")["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "podcrew-redis-password", "key": "password"}
    ]


def test_a_partition_threshold_is_never_below_one(helm_engine: Any) -> None:
    values = {
        "redis": {"enabled": False},
        "orchestrator": {"config": {"queue_partitions": 16, "key_prefix": "pc"}},
        "externalRedis": {
            "mode": "cluster",
            "url": "redis://10.0.0.7:6379/0",
            "cluster": {"addresses": ["10.0.0.7:6379"]},
            "enableTLS": True,
        },
        "worker": {
            "autoscaling": {
                "enabled": True,
                "mode": "keda",
                "targetLagPerReplica": 4,
                "targetPendingPerReplica": 40,
                "activationLag": 32,
            }
        },
    }
    triggers = _worker_triggers(helm_engine.install(values))
    assert len(triggers) == 32
    lag, pending = triggers["run-queue-lag-p15"], triggers["run-queue-pending-p15"]
    assert lag["metadata"]["stream"] == "{pc:p15}:runs"
    assert lag["metadata"]["lagCount"] == "1"
    assert lag["metadata"]["activationLagCount"] == "2"
    assert pending["metadata"]["pendingEntriesCount"] == "2"
    assert lag["metadata"]["enableTLS"] == "true"


def test_keda_in_cluster_mode_needs_seed_nodes(helm_engine: Any) -> None:
    with pytest.raises(Exception, match=r"externalRedis\.cluster\.addresses"):
        helm_engine.install(
            {
                "redis": {"enabled": False},
                "externalRedis": {"mode": "cluster", "url": "redis://10.0.0.7:6379/0"},
                "worker": {"autoscaling": {"enabled": True, "mode": "keda"}},
            }
        )


def test_network_policies_open_the_listed_cluster_nodes(helm_engine: Any) -> None:
    release = helm_engine.release("cluster-values.yaml")
    for component in COMPONENTS:
        assert _redis_egress(release, component) == [
            {
                "to": [{"ipBlock": {"cidr": "10.40.0.0/16"}}],
                "ports": [{"protocol": "TCP", "port": p} for p in (7000, 7001, 7002)],
            }
        ], component


# --- what the schema refuses ------------------------------------------------------------------

EXTERNAL = {"redis": {"enabled": False}}


def _refused(values: dict[str, Any], where: str, name: str) -> Any:
    return pytest.param(values, where, id=name)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        _refused(
            {**EXTERNAL, "externalRedis": {"url": "redis://r:6379/0", "mode": "replicated"}},
            "/externalRedis/mode",
            "unknown-mode",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"mode": "sentinel"}},
            "/externalRedis/sentinel/addresses",
            "sentinel-without-sentinels",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"mode": "sentinel", "sentinel": {"addresses": ["s0"]}}},
            "/externalRedis/sentinel/addresses/0",
            "sentinel-address-without-port",
        ),
        _refused(
            {
                **EXTERNAL,
                "externalRedis": {
                    "mode": "sentinel",
                    "sentinel": {"addresses": ["s0:26379"], "service": ""},
                },
            },
            "/externalRedis/sentinel/service",
            "sentinel-without-service",
        ),
        _refused(
            {"externalRedis": {"mode": "sentinel", "sentinel": {"addresses": ["s0:26379"]}}},
            "/redis/enabled",
            "sentinel-with-in-chart-redis",
        ),
        _refused(
            {"externalRedis": {"mode": "cluster", "url": "redis://r:6379/0"}},
            "/redis/enabled",
            "cluster-with-in-chart-redis",
        ),
        _refused(
            {"orchestrator": {"config": {"queue_partitions": 4}}},
            "/externalRedis/mode",
            "partitions-with-one-redis",
        ),
        _refused(
            {
                **EXTERNAL,
                "orchestrator": {"config": {"queue_partitions": 4}},
                "externalRedis": {"mode": "sentinel", "sentinel": {"addresses": ["s0:26379"]}},
            },
            "/externalRedis/mode",
            "partitions-through-sentinel",
        ),
        _refused(
            {
                **EXTERNAL,
                "orchestrator": {"config": {"queue_partitions": 257}},
                "externalRedis": {"mode": "cluster", "url": "redis://r:6379/0"},
            },
            "/orchestrator/config/queue_partitions",
            "too-many-partitions",
        ),
        _refused(
            {"orchestrator": {"config": {"queue_partitions": 0}}},
            "/orchestrator/config/queue_partitions",
            "no-partition",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"url": "redis://r:6379/0", "minReplicas": -1}},
            "/externalRedis/minReplicas",
            "negative-min-replicas",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"url": "redis://r:6379/0", "waitTimeoutMs": 0}},
            "/externalRedis/waitTimeoutMs",
            "no-wait-timeout",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"url": "redis://r:6379/0", "waitTimeoutMs": 60001}},
            "/externalRedis/waitTimeoutMs",
            "wait-timeout-over-a-minute",
        ),
        _refused(
            {**EXTERNAL, "externalRedis": {"url": "redis://r:6379/0", "sentinel": {"master": "m"}}},
            "/externalRedis/sentinel",
            "misspelled-sentinel-key",
        ),
    ],
)
def test_schema_refuses_impossible_topologies(
    helm_engine: Any, values: dict[str, Any], where: str
) -> None:
    """Each refused by the schema, before anything renders, naming the value at fault."""
    report = helm_engine.lint(values)
    assert any("schema" in e and f"at '{where}'" in e for e in report["errors"]), report
    with pytest.raises(Exception, match="schema"):
        helm_engine.install(values)


def test_schema_accepts_one_partition_anywhere_and_many_in_a_cluster(helm_engine: Any) -> None:
    """The refusals above are the combinations, not the values: the same values are accepted
    where they make sense."""
    for values in (
        {"orchestrator": {"config": {"queue_partitions": 1}}},
        {
            **EXTERNAL,
            "orchestrator": {"config": {"queue_partitions": 256}},
            "externalRedis": {"mode": "cluster", "url": "redis://r:6379/0", "minReplicas": 2},
        },
        {
            **EXTERNAL,
            "externalRedis": {
                "mode": "sentinel",
                "sentinel": {"addresses": ["[fd00::5]:26379", "s1.example:26380"]},
            },
        },
    ):
        report = helm_engine.lint(values)
        assert not report["errors"], (values, report["errors"])


def test_deploy_doc_says_which_topology_to_choose() -> None:
    """docs/deploy.md names every topology and its values, what a failover costs with and
    without `minReplicas`, and where the capacity figures are; the loss counts still to be
    measured are filled in from the failover test."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    section = text.split("\n## Redis topologies\n", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "redis.enabled: true",
        "externalRedis.mode: standalone",
        "externalRedis.mode: sentinel",
        "externalRedis.mode: cluster",
        "sentinel.addresses",
        "cluster.addresses",
        "queue_partitions",
        "PODCREW_REDIS_MIN_REPLICAS",
        "PODCREW_REDIS_WAIT_TIMEOUT_MS",
        "`WAIT`",
        "not-replicated",
        "Retry-After",
        "unacknowledged",
        "(benchmarks.md#redis-capacity)",
        "redis-sentinel-streams",
        "redis-cluster-streams",
    ):
        assert needle in section, needle
    assert "TBD" not in text
    assert "tests/integration/test_failover.py" in section
    assert re.search(r"\| 0 \| 300 \| 0 \| 59 \| \*\*241\*\* \|", section)
