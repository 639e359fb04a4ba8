"""What the chart promises, object by object: configuration from docs/configuration.md, Redis,
the LLM providers, autoscaling (KEDA and HPA), NetworkPolicies, monitoring, and `helm test`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podcrew"
COMPONENTS = ("api", "worker", "research-agent", "writer-agent")


# --- configuration -------------------------------------------------------------------------


# The settings classes docs/configuration.md is generated from, and the containers that read them.
def _settings_readers() -> list[tuple[Any, tuple[str, ...]]]:
    from podcrew_core.llm.settings import LLMSettings
    from podcrew_core.runtime.auth import ServiceTokenSettings
    from podcrew_core.runtime.settings import RedisSettings
    from podcrew_orchestrator.settings import OrchestratorSettings
    from podcrew_orchestrator.webhooks import WebhookSettings
    from podcrew_research.settings import ResearchSettings
    from podcrew_simulator.settings import SimulatorSettings
    from podcrew_writer.settings import WriterSettings

    return [
        (RedisSettings, ("api", "worker", "research-agent", "writer-agent")),
        (LLMSettings, ("worker", "research-agent", "writer-agent")),
        (OrchestratorSettings, ("api", "worker")),
        (ResearchSettings, ("research-agent",)),
        (WriterSettings, ("writer-agent",)),
        (ServiceTokenSettings, ("worker", "research-agent", "writer-agent")),
        (SimulatorSettings, ("llm-simulator",)),
        (WebhookSettings, ("api", "worker")),
    ]


# Settings the chart leaves to the process on purpose.
LEFT_TO_THE_PROCESS = {
    "PODCREW_ORCHESTRATOR_CONSUMER_NAME": "hostname-pid is unique per pod already",
    "PODCREW_ORCHESTRATOR_API_KEYS": "set from api.auth.existingSecret, in the api only (tested below)",
    "ANTHROPIC_API_KEY": "set from llm.anthropic.existingSecret with provider anthropic (below)",
    "PODCREW_LLM_VERTEX_ACCESS_TOKEN": "a fixed token expires within the hour: the chart uses GKE "
    "Workload Identity (serviceAccount.annotations)",
}
EXTERNAL_REDIS = {"redis": {"enabled": False}}
SENTINEL = {
    "addresses": ["10.0.0.5:26379", "10.0.0.6:26379"],
    "service": "podcrew",
    "passwordSecret": {"name": "sentinels"},
}
# Settings the chart renders from values of their own (not a `config` map), and only when those
# are given: the values that set each one, and what the process then reads.
FROM_OWN_VALUES: dict[str, tuple[dict[str, Any], Any]] = {
    "PODCREW_RESEARCH_KB_SOURCES": (
        {"researchAgent": {"knowledgeSources": [{"name": "kb", "configMap": {"name": "kb"}}]}},
        '["kb=/var/lib/podcrew/kb/kb"]',
    ),
    "PODCREW_RESEARCH_MCP_SERVERS": (
        {"researchAgent": {"mcpServers": [{"name": "docs", "url": "http://docs-mcp:8000/mcp"}]}},
        '[{"name":"docs","url":"http://docs-mcp:8000/mcp"}]',
    ),
    "PODCREW_RESEARCH_WEB_SEARCH_URL": (
        {"researchAgent": {"webSearch": {"provider": "searxng", "url": "http://searxng:8080"}}},
        "http://searxng:8080",
    ),
    "PODCREW_RESEARCH_WEB_SEARCH_API_KEY": (
        {"researchAgent": {"webSearch": {"provider": "tavily", "apiKey": {"existingSecret": "t"}}}},
        {"secretFile": {"name": "t", "key": "api-key"}},
    ),
    # The in-chart Redis is one server: its topology and replicas are the services' defaults.
    "PODCREW_REDIS_MODE": (
        {**EXTERNAL_REDIS, "externalRedis": {"mode": "cluster", "url": "redis://10.0.0.7:6379/0"}},
        "cluster",
    ),
    "PODCREW_REDIS_MIN_REPLICAS": (
        {**EXTERNAL_REDIS, "externalRedis": {"url": "redis://10.0.0.7:6379/0", "minReplicas": 2}},
        "2",
    ),
    "PODCREW_REDIS_WAIT_TIMEOUT_MS": (
        {
            **EXTERNAL_REDIS,
            "externalRedis": {"url": "redis://10.0.0.7:6379/0", "waitTimeoutMs": 250},
        },
        "250",
    ),
    "PODCREW_REDIS_SENTINELS": (
        {**EXTERNAL_REDIS, "externalRedis": {"mode": "sentinel", "sentinel": SENTINEL}},
        "10.0.0.5:26379,10.0.0.6:26379",
    ),
    "PODCREW_REDIS_SENTINEL_SERVICE": (
        {**EXTERNAL_REDIS, "externalRedis": {"mode": "sentinel", "sentinel": SENTINEL}},
        "podcrew",
    ),
    "PODCREW_REDIS_SENTINEL_PASSWORD": (
        {**EXTERNAL_REDIS, "externalRedis": {"mode": "sentinel", "sentinel": SENTINEL}},
        {"secretFile": {"name": "sentinels", "key": "sentinel-password"}},
    ),
}
# Where each settings prefix lives in values.yaml.
CONFIG_VALUES = {
    "PODCREW_ORCHESTRATOR_": ("orchestrator", "config"),
    "PODCREW_RESEARCH_": ("researchAgent", "config"),
    "PODCREW_WRITER_": ("writerAgent", "config"),
    "PODCREW_LLM_": ("llm", "config"),
    "PODCREW_SIM_": ("llm", "simulator", "config"),
    "PODCREW_WEBHOOK_": ("webhooks", "config"),
}


def _env_by_component(release: Any, chartlib: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for name, spec in chartlib.pod_specs(release.objects):
        (container,) = spec["containers"]
        out[name.removeprefix("rel-podcrew-")] = chartlib.env_of(container, release)
    return out


def _sample(schema: dict[str, Any]) -> Any:
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    for kind, value in (
        ("object", {}),
        ("array", []),
        ("string", "x"),
        ("integer", 1),
        ("number", 1.5),
        ("boolean", True),
    ):
        if kind in types:
            return value
    return schema["enum"][0]


def test_every_setting_reaches_the_processes_that_read_it(helm_engine: Any, chartlib: Any) -> None:
    """Each setting of each service is set by the chart (from values.yaml or by the chart itself),
    or is null in values.yaml, and then setting it there sets it in every process that reads it.
    The settings classes are where docs/configuration.md comes from, so a new setting fails here
    until the chart carries it."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    simulated = helm_engine.release("keda-values.yaml")
    default = _env_by_component(simulated, chartlib)
    optional: dict[str, tuple[tuple[str, ...], Any, tuple[str, ...]]] = {}
    missing = []
    for cls, readers in _settings_readers():
        prefix = cls.model_config.get("env_prefix", "")
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            var = (alias if isinstance(alias, str) else f"{prefix}{field}").upper()
            if var in LEFT_TO_THE_PROCESS or var in FROM_OWN_VALUES:
                continue
            absent = [c for c in readers if var not in default[c]]
            if not absent:
                continue
            path = CONFIG_VALUES.get(prefix)
            node: Any = values
            node_schema: Any = schema
            for key in path or ():
                node = node[key]
                node_schema = node_schema["properties"][key]
                node_schema = (
                    schema["definitions"][node_schema["$ref"].rsplit("/", 1)[-1]]
                    if "$ref" in node_schema
                    else node_schema
                )
            if path and field in node and node[field] is None:
                optional[var] = ((*path, field), _sample(node_schema["properties"][field]), readers)
            else:
                missing += [f"{c}: {var}" for c in absent]
    assert not missing, "settings the chart does not set:\n" + "\n".join(missing)
    assert optional, "expected some settings left to the services by default"

    # On top of the same values (the simulated LLM, webhooks on), so every reader is rendered.
    overrides: dict[str, Any] = chartlib.load_values(chartlib.CI_DIR / "keda-values.yaml")
    for path, sample, _ in optional.values():
        node = overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = sample
    env = _env_by_component(helm_engine.install(overrides), chartlib)
    for var, (path, sample, readers) in optional.items():
        expected = sample if isinstance(sample, str) else json.dumps(sample, separators=(",", ":"))
        for component in readers:
            assert env[component].get(var) == expected, (
                f"{'.'.join(path)} does not set {var} in {component}"
            )
    for var, (own, expected) in FROM_OWN_VALUES.items():
        assert var not in default["research-agent"], f"{var} is set with nothing configured"
        env = _env_by_component(helm_engine.install(own), chartlib)
        assert env["research-agent"].get(var) == expected, f"{own} does not set {var}"


def test_values_defaults_are_the_services_defaults() -> None:
    """A default in values.yaml that differs from the service's would silently change behaviour."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    drift = []
    for cls, _ in _settings_readers():
        path = CONFIG_VALUES.get(cls.model_config.get("env_prefix", ""))
        if not path:
            continue
        node: Any = values
        for key in path:
            node = node[key]
        for field, value in node.items():
            assert field in cls.model_fields, (
                f"{'.'.join(path)}.{field} is not a setting of {cls.__name__}"
            )
            info = cls.model_fields[field]
            if value is not None and info.default_factory is None and value != info.default:
                drift.append(f"{'.'.join(path)}.{field}: chart {value!r}, service {info.default!r}")
    assert not drift, "\n".join(drift)


def test_settings_reach_the_processes(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.install(
        {
            "orchestrator": {
                "config": {
                    "worker_concurrency": 7,
                    "key_prefix": "pc",
                    "tenant_limits": {"acme": {"burst": 5}},
                }
            },
            "researchAgent": {
                "config": {
                    "corpus_dir": "/corpus",
                    "fetch_allowed_hosts": ["docs.python.org"],
                    "fetch_max_bytes": 1000000,
                }
            },
            "writerAgent": {"config": {"max_tokens": 1234}},
            "llm": {"config": {"write_model": "claude-opus-4-1"}},
        }
    )
    worker = chartlib.component_env(release, "worker")
    research = chartlib.component_env(release, "research-agent")
    assert worker["PODCREW_ORCHESTRATOR_WORKER_CONCURRENCY"] == "7"
    assert worker["PODCREW_ORCHESTRATOR_KEY_PREFIX"] == "pc"
    # The agents count a run's spend under the same keys as the worker.
    assert research["PODCREW_RESEARCH_KEY_PREFIX"] == "pc"
    assert chartlib.component_env(release, "writer-agent")["PODCREW_WRITER_KEY_PREFIX"] == "pc"
    assert json.loads(worker["PODCREW_ORCHESTRATOR_TENANT_LIMITS"]) == {"acme": {"burst": 5}}
    assert worker["PODCREW_ORCHESTRATOR_RESEARCH_URL"] == "http://rel-podcrew-research-agent:8101"
    assert worker["PODCREW_ORCHESTRATOR_WRITER_URL"] == "http://rel-podcrew-writer-agent:8102"
    assert research["PODCREW_RESEARCH_CORPUS_DIR"] == "/corpus"
    # Numbers never become 1e+06; lists go as JSON, which pydantic-settings reads.
    assert research["PODCREW_RESEARCH_FETCH_MAX_BYTES"] == "1000000"
    assert json.loads(research["PODCREW_RESEARCH_FETCH_ALLOWED_HOSTS"]) == ["docs.python.org"]
    assert chartlib.component_env(release, "writer-agent")["PODCREW_WRITER_MAX_TOKENS"] == "1234"
    for component in ("worker", "research-agent", "writer-agent"):
        assert (
            chartlib.component_env(release, component)["PODCREW_LLM_WRITE_MODEL"]
            == "claude-opus-4-1"
        )
    # Every service listens on all interfaces in a pod (the processes default to loopback).
    for component, prefix in zip(
        COMPONENTS, ("ORCHESTRATOR", "ORCHESTRATOR", "RESEARCH", "WRITER"), strict=True
    ):
        assert chartlib.component_env(release, component)[f"PODCREW_{prefix}_HOST"] == "0.0.0.0"


STAND_INS = {
    "PODCREW_REDIS_URL": "redis://127.0.0.1:6379/0",
    "PODCREW_ORCHESTRATOR_API_KEYS": "[]",
    "PODCREW_WEBHOOK_SECRET": "a-webhook-signing-secret-from-a-secret",
}


def test_the_settings_parse_with_the_services_own_settings_classes(
    helm_engine: Any,
    chartlib: Any,
    monkeypatch: pytest.MonkeyPatch,
    values_file: str,
    tmp_path: Path,
) -> None:
    """The rendered values are what pydantic-settings accepts (types, bounds, JSON), secrets
    read from files as the kubelet mounts them."""
    release = helm_engine.release(values_file)
    env = _env_by_component(release, chartlib)
    for cls, readers in _settings_readers():
        for component in readers:
            if component not in env:
                continue
            with monkeypatch.context() as m:
                for key, value in env[component].items():
                    base = key.removesuffix("_FILE")
                    if isinstance(value, dict) and "secretFile" in value:
                        continue  # read through its <NAME>_FILE
                    if key != base and isinstance(env[component].get(base), dict):
                        # The mounted Secret: a file with a stand-in and a trailing newline.
                        stand_in = tmp_path / key
                        stand_in.write_text(
                            STAND_INS.get(base, "a-secret-from-a-mounted-file") + "\n"
                        )
                        m.setenv(key, str(stand_in))
                        continue
                    # $(VAR) references are resolved by the kubelet: stand in for them.
                    resolved = (
                        value
                        if isinstance(value, str) and "$(" not in value
                        else STAND_INS.get(key, "secret")
                    )
                    m.setenv(key, resolved)
                cls()  # raises on a value the service would refuse at start


# --- Redis -----------------------------------------------------------------------------------


def test_in_cluster_redis_is_the_official_image_with_aof_on_a_volume(
    helm_engine: Any, chartlib: Any
) -> None:
    release = helm_engine.release("default-values.yaml")
    sts = release.get("StatefulSet", "redis")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"docker\.io/library/redis:7\.\d+\.\d+", container["image"])
    conf = release.get("ConfigMap", "redis")["data"]["redis.conf"].splitlines()
    for line in (
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        "dir /data",
    ):
        assert line in conf
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    secret = release.get("Secret", "redis")
    assert len(secret["data"]["redis-password"]) >= 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The agents keep the spend ledger (and the research agent its tool cache) there too.
    # The URL is plain configuration; the password reaches every process as a file.
    for component in COMPONENTS:
        env = chartlib.component_env(release, component)
        assert env["PODCREW_REDIS_URL"] == "redis://rel-podcrew-redis:6379/0"
        assert env["PODCREW_REDIS_PASSWORD"] == {
            "secretFile": {"name": "rel-podcrew-redis", "key": "redis-password"}
        }
    # Redis itself: the password from the same file, into a config include, never the env.
    assert "env" not in container
    (command,) = [line for line in container["command"][2].splitlines() if "requirepass" in line]
    assert "$(cat /var/run/secrets/podcrew/redis/redis-password)" in command
    probe = container["readinessProbe"]["exec"]["command"][2]
    assert probe.startswith('REDISCLI_AUTH="$(cat /var/run/secrets/podcrew/redis/redis-password)"')
    all_images = [
        c["image"] for _, spec in chartlib.pod_specs(release.all()) for c in spec["containers"]
    ]
    assert not [i for i in all_images if "bitnami" in i]


def test_minimal_redis_has_no_password_and_no_volume(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("minimal-values.yaml")
    assert not release.has("Secret", "redis")
    sts = release.get("StatefulSet", "redis")
    assert "volumeClaimTemplates" not in sts["spec"]
    for component in COMPONENTS:
        env = chartlib.component_env(release, component)
        assert env["PODCREW_REDIS_URL"] == "redis://rel-podcrew-redis:6379/0", component
        assert "PODCREW_REDIS_PASSWORD" not in env, component


def test_external_redis_comes_from_an_existing_secret(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("external-redis-values.yaml")
    assert not release.of_kind("StatefulSet")
    assert not [o for o in release.objects if o["metadata"]["name"].endswith("-redis")]
    for component in COMPONENTS:
        assert chartlib.component_env(release, component)["PODCREW_REDIS_URL"] == {
            "secretFile": {"name": "podcrew-redis-url", "key": "url"}
        }
    with pytest.raises(Exception, match="externalRedis"):
        helm_engine.install({"redis": {"enabled": False}})


# --- LLM providers ---------------------------------------------------------------------------


def test_offline_provider_needs_nothing(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    assert not release.has("Deployment", "llm-simulator")
    for component in ("worker", "research-agent", "writer-agent"):
        env = chartlib.component_env(release, component)
        assert env["PODCREW_LLM_PROVIDER"] == "offline"
        assert "ANTHROPIC_API_KEY" not in env and "ANTHROPIC_BASE_URL" not in env


def test_simulated_provider_runs_the_simulator_in_cluster(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("keda-values.yaml")
    simulator = release.get("Deployment", "llm-simulator")
    (container,) = simulator["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/podcrew/orchestrator:0.1.0"
    assert container["command"][:2] == ["podcrew", "simulate-llm"]
    assert container["ports"] == [{"name": "http", "containerPort": 8200, "protocol": "TCP"}]
    assert release.get("Service", "llm-simulator")["spec"]["ports"][0]["port"] == 8200
    env = dict(chartlib.env_of(container, release))
    assert env["PODCREW_SIM_HOST"] == "0.0.0.0" and env["PODCREW_SIM_PORT"] == "8200"
    assert env["PODCREW_SIM_RATE_429"] == "0"
    for component in ("worker", "research-agent", "writer-agent"):
        env = chartlib.component_env(release, component)
        assert env["PODCREW_LLM_PROVIDER"] == "simulated"
        assert env["PODCREW_LLM_SIMULATOR_URL"] == "http://rel-podcrew-llm-simulator:8200"
        # The simulated provider presents its own placeholder key: no Secret is needed.
        assert "ANTHROPIC_API_KEY" not in env
    assert "PODCREW_LLM_SIMULATOR_URL" not in chartlib.component_env(release, "api")
    external = helm_engine.install(
        {
            "llm": {
                "provider": "simulated",
                "simulator": {"enabled": False, "url": "http://sim.example:8200"},
            }
        }
    )
    assert not external.has("Deployment", "llm-simulator")
    assert (
        chartlib.component_env(external, "worker")["PODCREW_LLM_SIMULATOR_URL"]
        == "http://sim.example:8200"
    )
    with pytest.raises(Exception, match=r"llm\.simulator\.url"):
        helm_engine.install({"llm": {"provider": "simulated", "simulator": {"enabled": False}}})


def test_anthropic_key_comes_from_an_existing_secret(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("hpa-values.yaml")
    assert not release.has("Deployment", "llm-simulator")
    for component in ("worker", "research-agent", "writer-agent"):
        env = chartlib.component_env(release, component)
        assert env["PODCREW_LLM_PROVIDER"] == "anthropic"
        assert env["ANTHROPIC_API_KEY"] == {
            "secretFile": {"name": "podcrew-anthropic", "key": "ANTHROPIC_API_KEY"}
        }
    assert "ANTHROPIC_API_KEY" not in chartlib.component_env(release, "api")
    assert chartlib.component_env(release, "api")["PODCREW_ORCHESTRATOR_API_KEYS"] == {
        "secretFile": {"name": "podcrew-api-keys", "key": "api-keys"}
    }
    with pytest.raises(Exception, match=r"llm\.anthropic\.existingSecret"):
        helm_engine.install({"llm": {"provider": "anthropic"}})
    proxied = helm_engine.install(
        {
            "llm": {
                "provider": "anthropic",
                "anthropic": {"existingSecret": "k", "baseUrl": "https://gw.example"},
            }
        }
    )
    assert (
        chartlib.component_env(proxied, "research-agent")["ANTHROPIC_BASE_URL"]
        == "https://gw.example"
    )


def test_agents_require_the_service_token_the_worker_sends(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    secret = release.get("Secret", "service-token")
    assert len(secret["data"]["service-token"]) >= 48
    ref = {"secretFile": {"name": "rel-podcrew-service-token", "key": "service-token"}}
    for component in ("worker", "research-agent", "writer-agent"):
        assert chartlib.component_env(release, component)["PODCREW_SERVICE_TOKEN"] == ref
    assert "PODCREW_SERVICE_TOKEN" not in chartlib.component_env(release, "api")
    off = helm_engine.install({"serviceToken": {"enabled": False}})
    assert not off.has("Secret", "service-token")
    assert "PODCREW_SERVICE_TOKEN" not in chartlib.component_env(off, "worker")


# --- completion webhooks ---------------------------------------------------------------------

WEBHOOK_SECRET_REF = {"secretFile": {"name": "podcrew-webhook", "key": "webhook-secret"}}


def _webhook_env(env: dict[str, Any]) -> dict[str, Any]:
    """The webhook settings as the process reads them (the secret's file resolved)."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith("PODCREW_WEBHOOK_") and k != "PODCREW_WEBHOOK_SECRET_FILE"
    }


def test_webhooks_reach_the_api_and_the_worker_only(helm_engine: Any, chartlib: Any) -> None:
    """The api checks whether webhooks are on, the worker signs and sends them; the secret
    comes from an existing Secret, never from values."""
    release = helm_engine.release("keda-values.yaml")
    env = _env_by_component(release, chartlib)
    for component in ("api", "worker"):
        assert _webhook_env(env[component]) == {
            "PODCREW_WEBHOOK_SECRET": WEBHOOK_SECRET_REF,
            "PODCREW_WEBHOOK_ALLOW_PRIVATE": "false",
            "PODCREW_WEBHOOK_TIMEOUT_S": "10",
            "PODCREW_WEBHOOK_MAX_ATTEMPTS": "6",
        }, component
    for component in ("research-agent", "writer-agent", "llm-simulator"):
        assert not _webhook_env(env[component]), component
    assert not [o for o in release.of_kind("Secret") if "webhook" in o["metadata"]["name"]]
    # Off by default: no secret, no settings, anywhere.
    default = _env_by_component(helm_engine.release("default-values.yaml"), chartlib)
    assert not [c for c, e in default.items() if _webhook_env(e)]

    custom = _env_by_component(
        helm_engine.install(
            {
                "webhooks": {
                    "enabled": True,
                    "existingSecret": "hooks",
                    "secretKey": "signing-key",
                    "config": {"allowed_hosts": ["hooks.example.com"], "max_attempts": 3},
                }
            }
        ),
        chartlib,
    )
    for component in ("api", "worker"):
        assert custom[component]["PODCREW_WEBHOOK_SECRET"] == {
            "secretFile": {"name": "hooks", "key": "signing-key"}
        }
        assert json.loads(custom[component]["PODCREW_WEBHOOK_ALLOWED_HOSTS"]) == [
            "hooks.example.com"
        ]
        assert custom[component]["PODCREW_WEBHOOK_MAX_ATTEMPTS"] == "3"


def test_webhooks_without_a_secret_are_refused(helm_engine: Any) -> None:
    with pytest.raises(Exception, match=r"webhooks\.existingSecret"):
        helm_engine.install({"webhooks": {"enabled": True}})
    with pytest.raises(Exception, match=r"webhooks\.existingSecret"):
        helm_engine.render({"webhooks": {"enabled": True}})
    # Disabled, nothing is needed.
    helm_engine.install({"webhooks": {"enabled": False, "config": {"max_attempts": 2}}})


def _webhook_egress(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in spec["egress"] if {p["port"] for p in r["ports"]} & {80, 443, 8443}]


def test_webhook_egress_only_when_enabled(helm_engine: Any) -> None:
    policies = _policies(helm_engine.release("keda-values.yaml"))
    (public,) = _webhook_egress(policies["worker"])
    assert public["ports"] == [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]
    v4, v6 = (peer["ipBlock"] for peer in public["to"])
    assert v4 == {
        "cidr": "0.0.0.0/0",
        "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
    }
    assert v6 == {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}
    # Only the worker sends webhooks (the research agent's 80/443 is fetch_url's webEgressTo).
    for component in ("api", "writer-agent", "redis", "llm-simulator", "test"):
        assert not _webhook_egress(policies[component]), component

    off = _policies(helm_engine.install({"networkPolicy": {"enabled": True}}))
    assert not _webhook_egress(off["worker"])

    private = _policies(
        helm_engine.install(
            {
                "networkPolicy": {"enabled": True},
                "webhooks": {
                    "enabled": True,
                    "existingSecret": "hooks",
                    "egress": {"ports": [443, 8443], "extraCidrs": ["10.30.0.0/16"]},
                },
            }
        )
    )
    ports = [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]
    assert _webhook_egress(private["worker"]) == [
        {"to": public["to"], "ports": ports},
        {"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}], "ports": ports},
    ]
    assert not helm_engine.install(
        {
            "webhooks": {"enabled": True, "existingSecret": "hooks"},
            "networkPolicy": {"enabled": False},
        }
    ).of_kind("NetworkPolicy")


# --- autoscaling -----------------------------------------------------------------------------


def test_keda_scales_workers_on_the_run_stream(helm_engine: Any) -> None:
    from podcrew_orchestrator.keys import Keys

    release = helm_engine.release("keda-values.yaml")
    spec = release.get("ScaledObject", "worker")["spec"]
    assert spec["scaleTargetRef"]["name"] == "rel-podcrew-worker"
    assert spec["minReplicaCount"] == 0  # scale to zero: only the lag trigger can wake from zero
    lag, pending = spec["triggers"]
    assert lag["type"] == pending["type"] == "redis-streams"
    keys = Keys("podcrew")
    assert (
        lag["metadata"]["stream"] == keys.queue and lag["metadata"]["consumerGroup"] == keys.group
    )
    assert lag["metadata"]["lagCount"] == "16" and lag["metadata"]["activationLagCount"] == "0"
    assert lag["metadata"]["address"] == "rel-podcrew-redis.podcrew.svc:6379"
    # Runs in progress are pending, not lag: this trigger keeps workers while they execute.
    assert (
        pending["metadata"]["pendingEntriesCount"] == "32" and "lagCount" not in pending["metadata"]
    )
    auth = release.get("TriggerAuthentication", "redis-keda")
    assert lag["authenticationRef"] == {"name": "rel-podcrew-redis-keda"}
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "rel-podcrew-redis", "key": "redis-password"}
    ]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_keda_scales_agents_on_queue_depth_and_p95(helm_engine: Any) -> None:
    release = helm_engine.release("keda-values.yaml")
    for component, gauge in (
        ("research-agent", "podcrew_admission_queue_depth"),
        ("writer-agent", "podcrew_admission_queue_depth"),
    ):
        triggers = {
            t["name"]: t for t in release.get("ScaledObject", component)["spec"]["triggers"]
        }
        queue, p95 = triggers["queue-depth"], triggers["p95-latency"]
        selector = f'namespace="podcrew",service="rel-podcrew-{component}"'
        assert queue["type"] == p95["type"] == "prometheus"
        assert queue["metricType"] == "AverageValue"
        assert queue["metadata"]["query"] == f"sum({gauge}{{{selector}}}) or vector(0)"
        # A service-wide p95 is compared as one value, not averaged per pod.
        assert p95["metricType"] == "Value"
        assert p95["metadata"]["query"].startswith(
            "histogram_quantile(0.95, sum by (le) (rate(podcrew_http_server_request_duration_seconds_bucket{"
        )
        assert selector in p95["metadata"]["query"]
        # Latency that comes from waiting for the shared rate limiter adds no replicas: the
        # trigger reads 0 while over 10 % of the component's LLM calls waited over 1 s.
        waited = (
            f'1 - sum(rate(podcrew_llm_ratelimit_wait_seconds_bucket{{{selector},le="1.0"}}[2m]))'
            f" / sum(rate(podcrew_llm_ratelimit_wait_seconds_count{{{selector}}}[2m]))"
        )
        assert p95["metadata"]["query"].endswith(f" > 0 unless on() ({waited} > 0.1) or vector(0)")
        assert (
            queue["metadata"]["serverAddress"]
            == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        )


def test_external_redis_keda_uses_its_address_tls_and_password(helm_engine: Any) -> None:
    release = helm_engine.release("external-redis-values.yaml")
    lag = release.get("ScaledObject", "worker")["spec"]["triggers"][0]
    assert lag["metadata"]["address"] == "redis.example.internal:6380"
    assert lag["metadata"]["enableTLS"] == "true"
    auth = release.get("TriggerAuthentication", "redis-keda")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "podcrew-redis-password", "key": "password"}
    ]


def test_hpa_metrics_and_behavior(helm_engine: Any) -> None:
    release = helm_engine.release("hpa-values.yaml")
    worker = release.get("HorizontalPodAutoscaler", "worker")["spec"]
    assert [m["type"] for m in worker["metrics"]] == ["External", "External"]
    for metric in worker["metrics"]:
        assert metric["external"]["metric"]["selector"] == {
            "matchLabels": {"service": "rel-podcrew-worker"}
        }
        assert metric["external"]["target"]["type"] == "AverageValue"
    research = release.get("HorizontalPodAutoscaler", "research-agent")["spec"]
    pods, obj = research["metrics"]
    assert pods["type"] == "Pods" and pods["pods"]["target"] == {
        "type": "AverageValue",
        "averageValue": "4",
    }
    assert obj["type"] == "Object" and obj["object"]["target"] == {"type": "Value", "value": "30"}
    assert obj["object"]["describedObject"] == {
        "apiVersion": "v1",
        "kind": "Service",
        "name": "rel-podcrew-research-agent",
    }
    # The component's own behavior replaces the default one.
    assert research["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    default = release.get("HorizontalPodAutoscaler", "writer-agent")["spec"]["behavior"]
    assert (
        default["scaleUp"]["stabilizationWindowSeconds"] == 0
        and default["scaleDown"]["stabilizationWindowSeconds"] == 300
    )
    with pytest.raises(Exception, match="cannot scale to zero"):
        helm_engine.install(
            {
                "autoscaling": {"mode": "hpa"},
                "worker": {"autoscaling": {"enabled": True, "minReplicas": 0}},
            }
        )


def _adapter_served() -> dict[str, dict[str, set[str]]]:
    """rule kind ("custom"/"external") -> metric name -> resources the rule maps."""
    values = yaml.safe_load(
        (ROOT / "k8s" / "addons" / "prometheus-adapter-values.yaml").read_text()
    )
    served: dict[str, dict[str, set[str]]] = {"custom": {}, "external": {}}
    for kind, table in served.items():
        for rule in values["rules"][kind]:
            query = rule["seriesQuery"]
            alternatives = re.search(r'__name__=~"([^"]+)"', query)
            names = (
                alternatives.group(1).split("|")
                if alternatives
                else [re.match(r"[a-z_:0-9]+", query).group(0)]
            )  # type: ignore[union-attr]
            pattern = re.compile(rule["name"]["matches"])
            as_ = re.sub(r"\$\{(\d+)\}", r"\\\1", rule["name"]["as"])
            for name in names:
                table[pattern.sub(as_, name)] = set(rule["resources"]["overrides"])
            assert (
                "<<.Series>>" in rule["metricsQuery"]
                and "<<.LabelMatchers>>" in rule["metricsQuery"]
            )
    return served


def test_prometheus_adapter_serves_every_hpa_metric(helm_engine: Any) -> None:
    served = _adapter_served()
    release = helm_engine.release("hpa-values.yaml")
    checked = 0
    for hpa in release.of_kind("HorizontalPodAutoscaler"):
        for metric in hpa["spec"]["metrics"]:
            kind = metric["type"]
            if kind == "Resource":
                continue
            name = metric[kind.lower()]["metric"]["name"]
            table = served["external" if kind == "External" else "custom"]
            assert name in table, (
                f"{hpa['metadata']['name']}: no adapter rule serves {kind} metric {name}"
            )
            needed = {"Pods": "pod", "Object": "service", "External": "namespace"}[kind]
            assert needed in table[name], f"{name}: the rule does not map {needed}"
            checked += 1
    assert checked == 6


# --- NetworkPolicies -------------------------------------------------------------------------


def _policies(release: Any) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"].removeprefix("rel-podcrew-"): o["spec"]
        for o in release.of_kind("NetworkPolicy")
    }


def _component(peer: dict[str, Any]) -> str | None:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")


def test_network_policies_deny_by_default_and_allow_the_request_path(
    helm_engine: Any, chartlib: Any
) -> None:
    release = helm_engine.release("keda-values.yaml")
    policies = _policies(release)
    deny = policies.pop("default-deny")
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "podcrew",
        "app.kubernetes.io/instance": "rel",
    }
    assert (
        deny["policyTypes"] == ["Ingress", "Egress"]
        and "ingress" not in deny
        and "egress" not in deny
    )

    # Every pod of the release has its own policy (nothing is left to the default deny alone).
    for name, spec in chartlib.pod_specs(release.all()):
        del spec
        component = name.removeprefix("rel-podcrew-").removesuffix("-test-run") or name
        component = "test" if name.endswith("test-run") else component
        assert component in policies, f"{name} has no NetworkPolicy"

    redis_from = policies["redis"]["ingress"][0]["from"]
    assert sorted(filter(None, map(_component, redis_from))) == sorted(COMPONENTS)
    assert [p for p in redis_from if not _component(p)] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    ]
    prometheus = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    for agent in ("research-agent", "writer-agent"):
        ingress = policies[agent]["ingress"]
        assert [_component(p) for p in ingress[0]["from"]] == ["worker"]
        assert ingress[1:] == [{"from": prometheus}]
    simulator_from = policies["llm-simulator"]["ingress"][0]["from"]
    assert sorted(map(_component, simulator_from)) == ["research-agent", "worker", "writer-agent"]
    assert policies["worker"]["ingress"] == [{"from": prometheus}]

    def egress_to(component: str) -> set[tuple[str | None, Any]]:
        return {
            (_component(peer), port["port"])
            for rule in policies[component]["egress"]
            for peer in rule.get("to", [{}])
            for port in rule["ports"]
        }

    worker = egress_to("worker")
    for target in (
        ("redis", 6379),
        ("research-agent", 8101),
        ("writer-agent", 8102),
        ("llm-simulator", 8200),
        (None, 53),
    ):
        assert target in worker, f"worker cannot reach {target}"
    # The agents' spend ledger and tool cache are in Redis.
    for agent in ("research-agent", "writer-agent"):
        assert ("redis", 6379) in egress_to(agent), agent
        assert ("llm-simulator", 8200) in egress_to(agent), agent
    assert ("redis", 6379) not in egress_to("test")
    # fetch_url goes to public addresses only.
    web = [
        r
        for r in policies["research-agent"]["egress"]
        if {p["port"] for p in r["ports"]} == {80, 443}
    ]
    assert web and "10.0.0.0/8" in web[0]["to"][0]["ipBlock"]["except"]
    assert ("api", 8000) in egress_to("test")


def test_network_policies_for_anthropic_restricted_clients_and_external_redis(
    helm_engine: Any,
) -> None:
    hpa = _policies(helm_engine.release("hpa-values.yaml"))
    api_from = hpa["api"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"podcrew.io/client": "true"}}} in api_from
    assert "test" in [_component(p) for p in api_from]
    for component in ("worker", "research-agent", "writer-agent"):
        llm = [
            r for r in hpa[component]["egress"] if r["ports"] == [{"protocol": "TCP", "port": 443}]
        ]
        assert llm and llm[0]["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0", component
    assert [p for p in hpa["redis"]["ingress"][0]["from"] if not _component(p)] == [], (
        "KEDA is not used in hpa mode"
    )
    external = _policies(helm_engine.release("external-redis-values.yaml"))
    assert "redis" not in external
    for component in COMPONENTS:
        redis = [
            r
            for r in external[component]["egress"]
            if r["ports"] == [{"protocol": "TCP", "port": 6380}]
        ]
        assert redis == [
            {
                "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                "ports": [{"protocol": "TCP", "port": 6380}],
            }
        ], component
    # On by default (the policy checks want every pod selected by one), off on request.
    assert helm_engine.release("default-values.yaml").of_kind("NetworkPolicy")
    assert not helm_engine.install({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


# --- monitoring ------------------------------------------------------------------------------


def test_service_monitors_select_the_services_on_their_named_port(helm_engine: Any) -> None:
    release = helm_engine.release("keda-values.yaml")
    for component in COMPONENTS:
        monitor = release.get("ServiceMonitor", component)
        service = release.get("Service", component)
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert not helm_engine.release("default-values.yaml").of_kind("ServiceMonitor")


def test_prometheus_rule_alerts_are_complete(helm_engine: Any) -> None:
    release = helm_engine.release("keda-values.yaml")
    (rule,) = release.of_kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    records = [r for r in rules if "record" in r]
    assert len(alerts) >= 5 and len(records) >= 4
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert {"summary", "description", "runbook_url"} <= alert["annotations"].keys(), alert[
            "alert"
        ]
        assert alert["for"], alert["alert"]
    for record in records:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record["record"]), record["record"]
    off = helm_engine.install(
        {"metrics": {"prometheusRule": {"enabled": True, "disabled": {"PodcrewRunsFailing": True}}}}
    )
    names = [
        r.get("alert")
        for g in off.of_kind("PrometheusRule")[0]["spec"]["groups"]
        for r in g["rules"]
    ]
    assert "PodcrewRunsFailing" not in names and "PodcrewRunQueueBacklog" in names


def test_dashboards_are_configmaps_for_the_grafana_sidecar(helm_engine: Any) -> None:
    release = helm_engine.release("keda-values.yaml")
    dashboards = [o for o in release.of_kind("ConfigMap") if "-dashboard-" in o["metadata"]["name"]]
    assert dashboards
    sidecar = yaml.safe_load(
        (ROOT / "k8s" / "addons" / "kube-prometheus-stack-values.yaml").read_text()
    )["grafana"]["sidecar"]["dashboards"]
    for cm in dashboards:
        # The chart's label and folder annotation are the ones the add-on's sidecar reads.
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"] == "1"
        assert cm["metadata"]["annotations"][sidecar["folderAnnotation"]] == "podcrew"
        ((key, text),) = cm["data"].items()
        assert key.endswith(".json")
        board = json.loads(text)
        assert board == json.loads((CHART / "dashboards" / key).read_text())
    assert not [
        o
        for o in helm_engine.release("default-values.yaml").of_kind("ConfigMap")
        if "-dashboard-" in o["metadata"]["name"]
    ]


def _dashboard_files() -> list[Path]:
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert files
    return files


def test_dashboards_follow_the_conventions() -> None:
    uids = set()
    for path in _dashboard_files():
        board = json.loads(path.read_text())
        assert board["uid"] and board["uid"] not in uids, path.name
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert (
            variables["datasource"]["type"] == "datasource"
            and variables["datasource"]["query"] == "prometheus"
        )
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "$datasource"}, panel[
                "title"
            ]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "$datasource"}, panel[
                    "title"
                ]
                for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]):
                    assert window == "$__rate_interval", f"{panel['title']}: [{window}]"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name


def _exported_metric_names() -> set[str]:
    """Every series name the services expose, from their prometheus_client definitions."""
    names: set[str] = set()
    sources = list((ROOT / "packages").glob("*/src/**/*.py")) + list(
        (ROOT / "services").glob("*/src/**/*.py")
    )
    for path in sources:
        for kind, name in re.findall(
            r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(podcrew_[a-z0-9_]+)\"", path.read_text()
        ):
            if kind == "Counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "Gauge":
                names.add(name)
            else:
                names |= (
                    {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                    if kind == "Histogram"
                    else {f"{name}_sum", f"{name}_count"}
                )
    assert "podcrew_queue_lag_entries" in names and "podcrew_http_server_requests_total" in names
    return names


def _metric_references(text: str) -> set[str]:
    text = re.sub(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", "", text)  # recording rule names
    return set(re.findall(r"\bpodcrew_[a-z0-9_]+", text))


def test_queries_use_only_metrics_the_services_export(helm_engine: Any) -> None:
    exported = _exported_metric_names()
    release = helm_engine.release("keda-values.yaml")
    hpa = helm_engine.release("hpa-values.yaml")
    texts = {path.name: path.read_text() for path in _dashboard_files()}
    texts["PrometheusRule"] = json.dumps(release.of_kind("PrometheusRule"))
    texts["ScaledObjects"] = json.dumps(
        [
            t["metadata"]
            for o in release.of_kind("ScaledObject")
            for t in o["spec"]["triggers"]
            if t["type"] == "prometheus"
        ]
    )
    texts["Pods metrics"] = json.dumps(
        [
            m
            for o in hpa.of_kind("HorizontalPodAutoscaler")
            for m in o["spec"]["metrics"]
            if m["type"] in ("Pods", "External")
        ]
    )
    adapter = yaml.safe_load(
        (ROOT / "k8s" / "addons" / "prometheus-adapter-values.yaml").read_text()
    )
    texts["prometheus-adapter rules"] = json.dumps(
        [r["seriesQuery"] for kind in ("custom", "external") for r in adapter["rules"][kind]]
    )
    unknown = {where: sorted(_metric_references(text) - exported) for where, text in texts.items()}
    assert all(_metric_references(text) for text in texts.values())
    assert not any(unknown.values()), f"metrics no service exports: {unknown}"


# --- helm test and NOTES ---------------------------------------------------------------------


def test_helm_test_pod_submits_a_run(helm_engine: Any, chartlib: Any) -> None:
    release = helm_engine.release("default-values.yaml")
    (pod,) = release.hooks
    assert pod["kind"] == "Pod" and pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][:2] == ["python3", "-c"]
    assert container["command"][2] == (CHART / "files" / "smoke-test.py").read_text()
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["PODCREW_API_URL"] == "http://rel-podcrew-api:8000"
    assert pod["spec"]["restartPolicy"] == "Never"
    keyed = helm_engine.release("hpa-values.yaml")
    keyed_env = chartlib.env_of(keyed.hooks[0]["spec"]["containers"][0], keyed)
    assert keyed_env["PODCREW_API_KEY"] == {
        "secretFile": {"name": "podcrew-test-key", "key": "api-key"}
    }
    # Probes on the script's heartbeat: a stuck test fails instead of waiting out its timeout.
    assert env["PODCREW_TEST_HEARTBEAT"] == "/tmp/heartbeat"
    assert "/tmp/heartbeat" in container["livenessProbe"]["exec"]["command"][-1]
    assert not helm_engine.release("minimal-values.yaml").hooks


def test_the_helm_test_script_passes_against_a_running_stack(tmp_path: Path) -> None:
    """The script the test pod runs, against the real services on loopback (offline LLM),
    with its key from a file as the pod mounts it, beating its heartbeat."""
    from podcrew_cli.stack import Stack, StackConfig

    script = CHART / "files" / "smoke-test.py"
    key = tmp_path / "api-key"
    key.write_text("a-test-key\n")
    heartbeat = tmp_path / "heartbeat"
    with Stack(StackConfig.on_free_ports()) as stack:
        result = subprocess.run(
            [sys.executable, str(script)],
            env={
                "PODCREW_API_URL": stack.config.api_url,
                "PODCREW_TEST_TIMEOUT_S": "60",
                "PODCREW_API_KEY_FILE": str(key),
                "PODCREW_TEST_HEARTBEAT": str(heartbeat),
            },
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    assert heartbeat.exists()


def test_the_helm_test_script_fails_when_the_api_is_unreachable() -> None:
    from podcrew_cli.stack import free_port

    result = subprocess.run(
        [sys.executable, str(CHART / "files" / "smoke-test.py")],
        env={"PODCREW_API_URL": f"http://127.0.0.1:{free_port()}", "PODCREW_TEST_TIMEOUT_S": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "could not submit" in result.stderr


def test_notes_tell_how_to_verify_the_install(helm_engine: Any) -> None:
    notes = helm_engine.release("keda-values.yaml").notes
    for expected in (
        "kubectl -n podcrew rollout status deployment -l app.kubernetes.io/instance=rel",
        "helm test rel -n podcrew --logs",
        "port-forward svc/rel-podcrew-api 8000:8000",
        "curl -s -XPOST 'localhost:8000/v1/runs?wait=60'",
        "kubectl -n podcrew get scaledobjects,hpa",
        "serviceMonitorSelectorNilUsesHelmValues",
    ):
        assert expected in notes, expected
