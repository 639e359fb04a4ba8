"""The egress guard as a library: URL parsing, the guard's check, the pinned request (any
method), and the client that ignores proxies, redirects and cookies. Address classification
and every SSRF spelling are covered through fetch_url in the research agent's tests."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from podcrew_core.contracts.errors import BlockedURL, ToolError
from podcrew_core.runtime.egress import (
    EgressGuard,
    EgressPolicy,
    Target,
    UnresolvableHost,
    create_client,
    parse_url,
)

PUBLIC_IP = "93.184.215.14"  # a public address; no test ever connects to it

Resolver = Callable[[str, int], Awaitable[list[str]]]


def table(answers: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(f"{host}:{port}")
        try:
            return answers[host]
        except KeyError:
            raise OSError(f"no such host {host}") from None

    return resolve


def refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"a request was sent to {request.url}")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://public.example/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("/relative", "only http and https"),
        ("https://user:pw@public.example/", "credentials"),
        ("https://user@public.example/", "credentials"),
        ("http:///path", "no host"),
        ("http://public.example:99999/", "not a TCP port"),
        ("http://public.example:0/", "not a TCP port"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_parse_url_refuses_what_the_guard_cannot_check(raw: str, reason: str) -> None:
    with pytest.raises(BlockedURL, match=reason):
        parse_url(raw)


def test_parse_url_accepts_http_and_https() -> None:
    assert parse_url("https://Public.Example:8443/a?b=1").host == "public.example"
    assert parse_url("http://public.example").scheme == "http"


async def test_check_resolves_once_and_pins_the_first_checked_address() -> None:
    calls: list[str] = []
    guard = EgressGuard(EgressPolicy(), table({"public.example": [PUBLIC_IP]}, calls))
    target = await guard.check("https://public.example/hook")
    assert calls == ["public.example:443"]
    assert (target.host, str(target.address), target.literal) == (
        "public.example",
        PUBLIC_IP,
        False,
    )

    # An already parsed URL (a redirect's target, say) is checked the same way.
    again = await guard.check(httpx.URL("http://public.example:8080/"))
    assert calls[-1] == "public.example:8080"
    assert str(again.address) == PUBLIC_IP


async def test_a_mapped_address_is_pinned_as_plain_ipv4() -> None:
    guard = EgressGuard(EgressPolicy(), table({"public.example": [f"::ffff:{PUBLIC_IP}"]}))
    target = await guard.check("http://public.example/")
    assert str(target.address) == PUBLIC_IP


async def test_any_private_answer_refuses_the_name() -> None:
    guard = EgressGuard(EgressPolicy(), table({"mixed.example": [PUBLIC_IP, "10.0.0.7"]}))
    with pytest.raises(BlockedURL, match=r"mixed\.example refused: 10\.0\.0\.7 is private"):
        await guard.check("http://mixed.example/")


async def test_allow_private_admits_private_but_never_metadata() -> None:
    guard = EgressGuard(
        EgressPolicy(allow_private=True),
        table({"dev.local": ["127.0.0.1"], "meta.local": ["169.254.169.254"]}),
    )
    assert str((await guard.check("http://dev.local:8080/")).address) == "127.0.0.1"
    assert str((await guard.check("http://10.0.0.1/")).address) == "10.0.0.1"
    with pytest.raises(BlockedURL, match="link-local"):
        await guard.check("http://meta.local/")
    with pytest.raises(BlockedURL, match="link-local"):
        await guard.check("http://[::ffff:169.254.169.254]/")


async def test_an_unresolvable_name_is_a_tool_error_but_not_a_refusal() -> None:
    guard = EgressGuard(EgressPolicy(), table({"empty.example": []}))
    for url in ("http://gone.example/", "http://empty.example/"):
        with pytest.raises(UnresolvableHost) as info:
            await guard.check(url)
        assert isinstance(info.value, ToolError)
        assert not isinstance(info.value, BlockedURL)


async def test_a_malformed_resolver_answer_is_refused() -> None:
    guard = EgressGuard(EgressPolicy(), table({"odd.example": ["not-an-ip"]}))
    with pytest.raises(BlockedURL, match="malformed"):
        await guard.check("http://odd.example/")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("hooks.example.com", True),
        ("HOOKS.example.com.", True),
        ("a.hooks.example.com", True),
        ("example.com", False),
        ("evilhooks.example.com", False),
        ("hooks.example.com.evil.net", False),
    ],
)
def test_allow_list_matches_hosts_and_subdomains(host: str, allowed: bool) -> None:
    assert EgressPolicy(allowed_hosts=("hooks.example.com",)).host_allowed(host) is allowed
    assert EgressPolicy().host_allowed(host)


async def test_allow_list_is_checked_before_resolving() -> None:
    calls: list[str] = []
    guard = EgressGuard(EgressPolicy(allowed_hosts=("hooks.example.com",)), table({}, calls))
    with pytest.raises(BlockedURL, match="allow-list"):
        await guard.check("http://public.example/")
    assert calls == []


async def test_a_post_is_pinned_with_its_body_and_the_name_kept() -> None:
    target = Target(
        url=httpx.URL("https://hooks.example:8443/in?k=v"),
        host="hooks.example",
        address=ipaddress.ip_address(PUBLIC_IP),
    )
    async with create_client(EgressPolicy(), httpx.MockTransport(refuse)) as client:
        request = target.request(
            client,
            "POST",
            headers={"Content-Type": "application/json", "host": "evil.example", "X-A": "1"},
            content=b'{"ok":true}',
        )
    assert request.method == "POST"
    assert str(request.url) == f"https://{PUBLIC_IP}:8443/in?k=v"
    assert request.headers["host"] == "hooks.example:8443"  # the caller cannot swap the name
    assert request.headers.get_list("host") == ["hooks.example:8443"]
    assert request.headers["connection"] == "close"
    assert request.headers["x-a"] == "1"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert request.content == b'{"ok":true}'
    assert request.headers["content-length"] == "11"


async def test_a_literal_address_gets_no_sni_and_ipv6_is_bracketed() -> None:
    guard = EgressGuard(EgressPolicy(allow_private=True))
    async with create_client(EgressPolicy(), httpx.MockTransport(refuse)) as client:
        literal = await guard.check("https://10.0.0.1/")
        assert "sni_hostname" not in literal.request(client).extensions
        v6 = await guard.check("http://[fd00::1]:81/x")
        request = v6.request(client)
    assert str(request.url) == "http://[fd00::1]:81/x"
    assert request.headers["host"] == "[fd00::1]:81"
    assert request.method == "GET"


async def test_the_client_follows_no_redirect_and_keeps_no_cookie() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            302, headers={"location": "http://169.254.169.254/", "set-cookie": "s=1; Path=/"}
        )

    async with create_client(EgressPolicy(), httpx.MockTransport(handler)) as client:
        first = await client.get(f"http://{PUBLIC_IP}/")
        await client.get(f"http://{PUBLIC_IP}/")
    assert first.status_code == 302
    assert [str(r.url) for r in seen] == [f"http://{PUBLIC_IP}/"] * 2
    assert "cookie" not in seen[1].headers


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    started: list[ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.paths = []  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append(server)
        threads.append(thread)
    try:
        yield started
    finally:
        for server, thread in zip(started, threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join()


async def test_the_client_ignores_proxy_variables(
    servers: list[ThreadingHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, proxy = servers
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    # The control: a client that trusts the environment goes through the proxy.
    async with httpx.AsyncClient() as trusting:
        await trusting.get(f"http://127.0.0.1:{target.server_address[1]}/trusting")
    assert proxy.paths == [f"http://127.0.0.1:{target.server_address[1]}/trusting"]  # type: ignore[attr-defined]

    async with create_client(EgressPolicy(allow_private=True)) as client:
        response = await client.get(f"http://127.0.0.1:{target.server_address[1]}/direct")
    assert response.status_code == 200
    assert target.paths == ["/direct"]  # type: ignore[attr-defined]
    assert len(proxy.paths) == 1  # type: ignore[attr-defined]
