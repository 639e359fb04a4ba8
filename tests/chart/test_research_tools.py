"""What the chart gives the research agents to search: knowledge sources mounted read-only,
MCP servers with their header Secrets, a web search provider with its key Secret, and the
NetworkPolicy egress to exactly those endpoints. ci/research-tools-values.yaml configures
them all (and is rendered and validated with every other ci/ values file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

TOOLS = "research-tools-values.yaml"


def _pod(release: Any) -> dict[str, Any]:
    spec: dict[str, Any] = release.get("Deployment", "research-agent")["spec"]["template"]["spec"]
    return spec


def _mounted(release: Any) -> dict[str, tuple[dict[str, Any], bool]]:
    """mountPath -> (the volume mounted there, read-only?) in the research agent."""
    spec = _pod(release)
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    return {
        m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False))
        for m in container["volumeMounts"]
    }


def _research_settings(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The research agent's settings as it reads them from this environment, each mounted
    Secret a file holding a stand-in."""
    from podcrew_research.settings import ResearchSettings

    for key, value in env.items():
        if key.startswith("PODCREW_RESEARCH_") and isinstance(value, str):
            if key.endswith("_FILE"):
                stand_in = tmp_path / key
                stand_in.write_text("a-key-from-a-mounted-secret\n")
                monkeypatch.setenv(key, str(stand_in))
            else:
                monkeypatch.setenv(key, value)
    return ResearchSettings()


def test_knowledge_sources_are_read_only_volumes_named_in_the_setting(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = helm_engine.release(TOOLS)
    mounted = _mounted(release)
    settings = _research_settings(
        chartlib.component_env(release, "research-agent"), tmp_path, monkeypatch
    )
    assert settings.knowledge_sources() == [
        "handbook=/var/lib/podcrew/kb/handbook",
        "runbooks=/var/lib/podcrew/kb/runbooks/current",
        "product=/srv/kb/product",
    ]
    handbook, read_only = mounted["/var/lib/podcrew/kb/handbook"]
    assert handbook["configMap"] == {"name": "team-handbook"} and read_only
    runbooks, read_only = mounted["/var/lib/podcrew/kb/runbooks"]
    assert runbooks["persistentVolumeClaim"] == {"claimName": "runbooks", "readOnly": True}
    assert read_only
    product, read_only = mounted["/srv/kb/product"]
    assert product["image"] == {
        "reference": "registry.example.com/kb/product-index:2026.05",
        "pullPolicy": "IfNotPresent",
    }
    assert read_only
    # Mounted whole, never by subPath: a ConfigMap update then reaches the agent.
    (container,) = _pod(release)["containers"]
    assert not [m for m in container["volumeMounts"] if "subPath" in m]
    # Only the research agents mount them.
    writer = release.get("Deployment", "writer-agent")["spec"]["template"]["spec"]
    assert not [v for v in writer["volumes"] if v["name"].startswith("kb-")]


def test_with_no_knowledge_source_the_agent_keeps_its_corpus(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podcrew_research.settings import DEFAULT_CORPUS_DIR

    release = helm_engine.release("default-values.yaml")
    env = chartlib.component_env(release, "research-agent")
    settings = _research_settings(env, tmp_path, monkeypatch)
    assert settings.knowledge_sources() == [str(DEFAULT_CORPUS_DIR)]
    assert settings.mcp_servers == [] and settings.web_search_provider == "off"
    assert "PODCREW_RESEARCH_WEB_SEARCH_API_KEY" not in env
    assert not [m for m in _mounted(release) if "/kb/" in m or "/mcp-" in m]


def test_an_image_volume_needs_kubernetes_1_31(helm_engine: Any, chartlib: Any) -> None:
    values = chartlib.load_values(chartlib.CI_DIR / TOOLS)
    with pytest.raises(Exception, match=r"image volume needs Kubernetes 1\.31"):
        helm_engine.install(values, kube_version="1.30.0")
    # A ConfigMap or a claim needs nothing new.
    sources = values["researchAgent"]["knowledgeSources"]
    values["researchAgent"]["knowledgeSources"] = [s for s in sources if "image" not in s]
    assert helm_engine.install(values, kube_version="1.30.0").has("Deployment", "research-agent")


def test_mcp_servers_reach_the_setting_with_their_headers_as_a_mounted_secret(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = helm_engine.release(TOOLS)
    env = chartlib.component_env(release, "research-agent")
    docs, tickets = _research_settings(env, tmp_path, monkeypatch).mcp_servers
    assert (docs.name, docs.url) == ("docs", "http://docs-mcp.tools.svc:8000/mcp")
    assert docs.allowed_tools == ["search", "get_page"]
    assert (docs.timeout_s, docs.cache) == (15, True)
    # The headers file is the Secret's key, mounted read-only where the setting says.
    secret = chartlib.secret_mounts(_pod(release)["containers"][0], release)[
        str(docs.headers_file.parent)
    ]
    assert secret["secretName"] == "docs-mcp-headers"
    assert secret["items"] == [{"key": "headers", "path": docs.headers_file.name}]
    assert secret["defaultMode"] == 0o440
    # A server given only a name and a URL gets the service's defaults.
    assert (tickets.headers_file, tickets.allowed_tools, tickets.timeout_s, tickets.cache) == (
        None,
        [],
        10.0,
        False,
    )


def test_the_web_search_key_comes_from_a_secret_as_a_file(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = helm_engine.release(TOOLS)
    env = chartlib.component_env(release, "research-agent")
    assert env["PODCREW_RESEARCH_WEB_SEARCH_API_KEY"] == {
        "secretFile": {"name": "brave-search", "key": "api-key"}
    }
    settings = _research_settings(env, tmp_path, monkeypatch)
    assert settings.web_search_provider == "brave"
    assert settings.web_search_api_key.get_secret_value() == "a-key-from-a-mounted-secret"
    assert (settings.web_search_max_results, settings.web_search_timeout_s) == (8, 4.0)
    writer = chartlib.component_env(release, "writer-agent")
    assert not [k for k in writer if "WEB_SEARCH" in k]


def _egress(release: Any, component: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = release.get("NetworkPolicy", component)["spec"]["egress"]
    return rules


def test_egress_opens_exactly_to_the_configured_servers_and_provider(
    helm_engine: Any, chartlib: Any
) -> None:
    bare = _egress(helm_engine.release("default-values.yaml"), "research-agent")
    release = helm_engine.release(TOOLS)
    added = [r for r in _egress(release, "research-agent") if r not in bare]
    assert added == [
        # In the cluster: the selectors given, on the pods' port behind the Service.
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tools"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "docs-mcp"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": 8000}],
        },
        # An IP address: that address alone, on the URL's scheme port.
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.7/32"}}],
            "ports": [{"protocol": "TCP", "port": 443}],
        },
        # A DNS name (Brave's API): its port, to any address (a policy cannot name a host).
        {"ports": [{"protocol": "TCP", "port": 443}]},
    ]
    # The other components gain nothing.
    for component in ("api", "worker", "writer-agent"):
        before = _egress(helm_engine.release("default-values.yaml"), component)
        assert _egress(release, component) == before, component


def test_egress_follows_the_url_port_and_given_peers(helm_engine: Any) -> None:
    values = {
        "researchAgent": {
            "mcpServers": [
                {"name": "a", "url": "http://[fd00::5]:9000/mcp"},
                {
                    "name": "b",
                    "url": "https://mcp.example.com:8443/mcp",
                    "egress": {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]},
                },
            ],
            "webSearch": {"provider": "searxng", "url": "http://192.0.2.9:8888"},
        }
    }
    bare = _egress(helm_engine.release("default-values.yaml"), "research-agent")
    added = [r for r in _egress(helm_engine.install(values), "research-agent") if r not in bare]
    assert added == [
        {
            "to": [{"ipBlock": {"cidr": "fd00::5/128"}}],
            "ports": [{"protocol": "TCP", "port": 9000}],
        },
        {
            "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "ports": [{"protocol": "TCP", "port": 8443}],
        },
        {
            "to": [{"ipBlock": {"cidr": "192.0.2.9/32"}}],
            "ports": [{"protocol": "TCP", "port": 8888}],
        },
    ]


@pytest.mark.parametrize(
    "research",
    [
        {"knowledgeSources": [{"name": "kb"}]},
        {
            "knowledgeSources": [
                {"name": "kb", "configMap": {"name": "a"}, "image": {"reference": "r"}}
            ]
        },
        {"knowledgeSources": [{"name": "Docs", "configMap": {"name": "a"}}]},
        {"knowledgeSources": [{"name": "kb", "configMap": {"name": "a"}, "mountPath": "kb"}]},
        {"knowledgeSources": [{"name": "kb", "persistentVolumeClaim": {"name": "a"}}]},
        {"mcpServers": [{"name": "docs"}]},
        {"mcpServers": [{"name": "docs.v2", "url": "http://docs:8000/mcp"}]},
        {"mcpServers": [{"name": "docs", "url": "ftp://docs/mcp"}]},
        {"mcpServers": [{"name": "docs", "url": "http://docs/mcp", "headers": {"value": "x"}}]},
        {"mcpServers": [{"name": "docs", "url": "http://docs/mcp", "timeoutSeconds": 0}]},
        {"mcpServers": [{"name": "docs", "url": "http://d/mcp", "egress": {"ports": [0]}}]},
        {"webSearch": {"provider": "google"}},
        {"webSearch": {"provider": "searxng"}},
        {"webSearch": {"provider": "brave"}},
        {"webSearch": {"provider": "tavily", "apiKey": {"value": "tvly-in-values"}}},
        {"webSearch": {"maxResults": 50}},
    ],
    ids=[
        "kb-without-volume",
        "kb-two-volumes",
        "kb-name",
        "kb-relative-mount",
        "kb-claim-key",
        "mcp-without-url",
        "mcp-name",
        "mcp-url-scheme",
        "mcp-headers-as-value",
        "mcp-timeout",
        "mcp-egress-port",
        "search-provider",
        "searxng-without-url",
        "brave-without-key",
        "key-in-values",
        "search-max-results",
    ],
)
def test_the_schema_refuses_bad_shapes(helm_engine: Any, research: dict[str, Any]) -> None:
    values = {"researchAgent": research}
    report = helm_engine.lint(values)
    assert any("schema" in e for e in report["errors"]), report
    with pytest.raises(Exception, match="schema"):
        helm_engine.install(values)


@pytest.mark.parametrize(
    ("research", "message"),
    [
        (
            {
                "knowledgeSources": [
                    {"name": "kb", "configMap": {"name": "a"}},
                    {"name": "kb", "persistentVolumeClaim": {"claimName": "b"}},
                ]
            },
            "used twice",
        ),
        (
            {
                "mcpServers": [
                    {"name": "my_docs", "url": "http://a/mcp"},
                    {"name": "my-docs", "url": "http://b/mcp"},
                ]
            },
            "used twice",
        ),
    ],
    ids=["kb-names", "mcp-names"],
)
def test_names_used_twice_are_refused(
    helm_engine: Any, research: dict[str, Any], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        helm_engine.install({"researchAgent": research})


def test_the_mcp_setting_is_valid_json_whatever_the_url_holds(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = 'http://docs:8000/mcp?a=1&b="2"'
    release = helm_engine.install({"researchAgent": {"mcpServers": [{"name": "docs", "url": url}]}})
    env = chartlib.component_env(release, "research-agent")
    assert json.loads(env["PODCREW_RESEARCH_MCP_SERVERS"])[0]["url"] == url
    (server,) = _research_settings(env, tmp_path, monkeypatch).mcp_servers
    assert server.url == url


def test_the_mcp_server_example_is_valid_and_the_values_point_at_it(
    helm_engine: Any, chartlib: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes_validate

    examples = chartlib.ROOT / "k8s" / "examples"
    objects = {o["kind"]: o for o in yaml.safe_load_all((examples / "mcp-server.yaml").read_text())}
    for obj in objects.values():
        kubernetes_validate.validate(obj, chartlib.KUBE_VERSIONS[-1], strict=True)
    pod = objects["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    service = objects["Service"]
    (service_port,) = service["spec"]["ports"]
    (container_port,) = container["ports"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service_port["targetPort"] == container_port["name"]
    # Its code runs from the ConfigMap it mounts.
    assert container["command"][-1].removeprefix("/srv/mcp/") in objects["ConfigMap"]["data"]

    release = helm_engine.install(chartlib.load_values(examples / "values-mcp-server.yaml"))
    env = chartlib.component_env(release, "research-agent")
    (server,) = _research_settings(env, tmp_path, monkeypatch).mcp_servers
    # The URL names the Service and its port; the headers come from the Secret it checks.
    assert server.url == f"http://{service['metadata']['name']}:{service_port['port']}/mcp"
    secret = chartlib.secret_mounts(_pod(release)["containers"][0], release)[
        str(server.headers_file.parent)
    ]
    (token,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert secret["secretName"] == token["secret"]["secretName"]
    # Egress reaches its pods on the port they listen on (policies see pod ports, not Services').
    bare = _egress(helm_engine.release("default-values.yaml"), "research-agent")
    (rule,) = [r for r in _egress(release, "research-agent") if r not in bare]
    (peer,) = rule["to"]
    assert peer["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert rule["ports"] == [{"protocol": "TCP", "port": container_port["containerPort"]}]
    # And its own policy lets exactly the research agents in.
    (ingress,) = objects["NetworkPolicy"]["spec"]["ingress"]
    (source,) = ingress["from"]
    agent_labels = release.get("Deployment", "research-agent")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert source["podSelector"]["matchLabels"].items() <= agent_labels.items()


def test_web_search_defaults_are_the_services_defaults() -> None:
    """The chart always renders these, so a default differing from the service's would
    silently change behaviour."""
    from podcrew_research.settings import ResearchSettings

    chart = Path(__file__).resolve().parents[2] / "charts" / "podcrew" / "values.yaml"
    web = yaml.safe_load(chart.read_text())["researchAgent"]["webSearch"]
    fields = ResearchSettings.model_fields
    assert web["provider"] == fields["web_search_provider"].default
    assert web["maxResults"] == fields["web_search_max_results"].default
    assert web["timeoutSeconds"] == fields["web_search_timeout_s"].default
