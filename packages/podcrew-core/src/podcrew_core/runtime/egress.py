"""The egress guard: every outbound request to a URL someone else chose goes through it.

A URL chosen by a model (`fetch_url`) or by a caller (a run's `callback_url`) is attacker
controlled. Without a guard, podcrew is a server-side request forgery gadget: it would
reach cloud metadata (169.254.169.254), the Kubernetes API, Redis, or any pod on the
cluster network. The guard therefore:

- accepts only http(s) URLs without credentials, optionally only allow-listed hosts;
- reads every numeric spelling of an IPv4 address (`2130706433`, `0177.0.0.1`,
  `0x7f.0.0.1`, `127.1`) the way the C resolver would, and unwraps IPv4 addresses
  embedded in IPv6 ones (`::ffff:127.0.0.1`, NAT64, 6to4);
- resolves a name once and refuses it if ANY address is not public;
- connects to the address it checked (the URL's host is rewritten to that IP; the `Host`
  header and TLS SNI keep the name, so certificates are still verified against the name),
  so DNS cannot answer differently between the check and the connection (DNS rebinding);
- uses a client that ignores proxy variables, never follows redirects and keeps no cookies,
  so whoever follows a redirect must check its target here first.

Why hand-written: the maintained SSRF filters for Python validate a URL and then let the
HTTP client resolve the name again, or hook a synchronous `requests` adapter; none pins
the checked IP for an `httpx.AsyncClient`, which is the part that defeats DNS rebinding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Literal

import httpx

from podcrew_core.contracts.errors import BlockedURL, ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) -> addresses`: the system resolver, or a table in tests."""
AddressClass = Literal["public", "private", "forbidden"]

SCHEMES = frozenset({"http", "https"})
_NUMERIC_LABEL = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


class UnresolvableHost(ToolError):
    """The guard could not resolve a name. Not a refusal: DNS may answer later."""

    slug = "unresolvable-host"
    title = "Host name could not be resolved"


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


# Reachable only with `allow_private` (tests, local development).
_PRIVATE = _nets(
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("198.18.0.0/15", "benchmarking"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local"),
)
# Never reachable. Listed explicitly rather than trusting `ipaddress.is_global` alone, whose
# tables changed across Python patch releases (3.11.7 calls `::ffff:0:7f00:1` global).
_FORBIDDEN = _nets(
    ("0.0.0.0/8", "unspecified ('this host'; Linux connects it to loopback)"),
    ("169.254.0.0/16", "link-local (cloud metadata service)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved or broadcast"),
    ("::/96", "unspecified or IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo included)"),
    ("2001:db8::/32", "documentation"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def classify(ip: IPAddress) -> tuple[AddressClass, str]:
    """Whether an address is public, private (dev only) or never reachable, and why."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one reaches that IPv4 host: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        if embedded is not None:
            kind, reason = classify(embedded)
            return kind, f"{reason} (embedded {embedded})"
    for net, reason in _PRIVATE:
        if ip.version == net.version and ip in net:
            return "private", reason
    for net, reason in _FORBIDDEN:
        if ip.version == net.version and ip in net:
            return "forbidden", reason
    if ip.is_multicast or ip.is_link_local or ip.is_unspecified or ip.is_reserved:
        return "forbidden", "not a unicast address"
    if not ip.is_global:
        return "forbidden", "not globally routable"
    return "public", "public"


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why the guard refuses to connect to `ip`, or None if it may."""
    kind, reason = classify(ip)
    if kind == "public" or (kind == "private" and allow_private):
        return None
    return f"{ip} is {reason}"


def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spells, read as the C resolver's `inet_aton` reads it.

    `2130706433`, `0177.0.0.1`, `0x7f.1` and `127.1` are all 127.0.0.1 to `getaddrinfo`; a
    guard that only knew dotted quads would send them to the resolver as names and let
    them through. Returns None for a DNS name; a numeric host that is no valid address is
    refused rather than handed to the resolver to interpret.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise BlockedURL(f"malformed IPv6 address {host!r}") from exc
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    values: list[int] = []
    for label in labels:
        if label[:2].lower() == "0x":
            values.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise BlockedURL(f"malformed octal IPv4 address {host!r}")
            values.append(int(label, 8))
        else:
            values.append(int(label))
    *head, last = values
    if len(values) > 4 or any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise BlockedURL(f"malformed numeric host {host!r}")
    number = 0
    for value in head:
        number = (number << 8) | value
    return ipaddress.IPv4Address((number << 8 * (4 - len(head))) | last)


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (without blocking the loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_url(raw: str) -> httpx.URL:
    """`raw` as an http(s) URL with a host and no credentials, or `BlockedURL`."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise BlockedURL(f"not a valid URL: {exc}") from exc
    if url.scheme not in SCHEMES:
        raise BlockedURL(f"only http and https URLs may be reached, not {url.scheme or 'none'!r}")
    if url.userinfo:
        raise BlockedURL("URLs carrying credentials are refused")
    if not url.raw_host:
        raise BlockedURL("the URL has no host")
    if url.port is not None and not 0 < url.port < 65536:
        raise BlockedURL(f"port {url.port} is not a TCP port")
    return url


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What the guard lets through, and how long one request may take."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout_s: float = 5.0

    def host_allowed(self, host: str) -> bool:
        """An empty allow-list allows every host; otherwise the host or a subdomain of it."""
        if not self.allowed_hosts:
            return True
        host = host.lower().rstrip(".")
        for entry in self.allowed_hosts:
            allowed = entry.lower().rstrip(".")
            if host == allowed or host.endswith("." + allowed):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Target:
    """A URL the guard accepted, and the one address it may be reached at."""

    url: httpx.URL
    host: str
    address: IPAddress
    literal: bool = False

    def request(
        self,
        client: httpx.AsyncClient,
        method: str = "GET",
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        """A request to the checked address, carrying the name in `Host` and in TLS SNI.

        `Host` and `Connection` are set here whatever `headers` say: the name is the one
        that was checked, and the connection must not outlive this request.
        """
        pinned = self.url.copy_with(host=str(self.address))
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https" and not self.literal:
            extensions["sni_hostname"] = self.host
        merged = dict(headers or {})
        for name in [key for key in merged if key.lower() in {"host", "connection"}]:
            del merged[name]
        merged["Host"] = self.url.netloc.decode("ascii")
        # The pool keys connections by address alone; a reused TLS connection could carry
        # another name's identity. One connection per request avoids that.
        merged["Connection"] = "close"
        return client.build_request(
            method, pinned, headers=merged, content=content, extensions=extensions
        )


def create_client(
    policy: EgressPolicy, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A client for guarded requests; created in the lifespan, closed there.

    It ignores proxy environment variables (a proxy would resolve names itself, undoing the
    guard), never follows redirects on its own (each hop must be checked first), and keeps
    no cookies between requests, which serve unrelated runs.
    """
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(policy.timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
    )


class EgressGuard:
    """Checks URLs against a policy and pins each accepted one to a checked address."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self._resolve = resolver

    async def check(self, url: str | httpx.URL) -> Target:
        """Accept `url` and choose the address to connect to.

        Raises `BlockedURL` when the URL or any address its host resolves to is refused,
        and `UnresolvableHost` when the name does not resolve.
        """
        if isinstance(url, str):
            url = parse_url(url)
        host = url.raw_host.decode("ascii")
        if not self.policy.host_allowed(host):
            raise BlockedURL(f"{host} is not on the egress allow-list")
        literal = parse_numeric_host(host)
        if literal is not None:
            candidates = [literal]
        else:
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                resolved = await self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise UnresolvableHost(f"cannot resolve {host}: {exc}") from exc
            if not resolved:
                raise UnresolvableHost(f"{host} has no addresses")
            candidates = []
            for text in resolved:
                try:
                    candidates.append(ipaddress.ip_address(text))
                except ValueError as exc:
                    raise BlockedURL(f"{host} resolved to a malformed address") from exc
        # Every address must pass: connecting picks one, and an attacker picks which.
        for ip in candidates:
            reason = refusal(ip, allow_private=self.policy.allow_private)
            if reason is not None:
                raise BlockedURL(f"{host} refused: {reason}")
        chosen = candidates[0]
        if isinstance(chosen, ipaddress.IPv6Address) and chosen.ipv4_mapped is not None:
            chosen = chosen.ipv4_mapped
        return Target(url=url, host=host, address=chosen, literal=literal is not None)
