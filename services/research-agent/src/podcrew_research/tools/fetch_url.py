"""`fetch_url`: read a public web page for the model, behind an egress guard.

The model chooses the URL, and the model reads untrusted text, so the URL is attacker
controlled. Without a guard the agent is a server-side request forgery gadget: it would
fetch cloud metadata (169.254.169.254), the Kubernetes API, Redis, or any pod on the
cluster network. The guard therefore:

- accepts only http(s) URLs without credentials, optionally only allow-listed hosts;
- reads every numeric spelling of an IPv4 address (`2130706433`, `0177.0.0.1`,
  `0x7f.0.0.1`, `127.1`) the way the C resolver would, and unwraps IPv4 addresses
  embedded in IPv6 ones (`::ffff:127.0.0.1`, NAT64, 6to4);
- resolves a name once and refuses it if ANY address is not public;
- connects to the address it checked (the URL's host is rewritten to that IP; the `Host`
  header and TLS SNI keep the name), so DNS cannot answer differently between the check
  and the connection (DNS rebinding);
- follows redirects itself, checking every hop the same way;
- bounds time, body bytes and returned text.

Why hand-written: the maintained SSRF filters for Python validate a URL and then let the
HTTP client resolve the name again, or hook a synchronous `requests` adapter; none pins
the checked IP for an `httpx.AsyncClient`, which is the part that defeats DNS rebinding.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from podcrew_core.deadline import Deadline
from podcrew_core.errors import BlockedURL, ToolError
from podcrew_core.llm.protocol import FETCH_URL_SPEC, FetchUrlInput
from podcrew_core.schemas import Source
from podcrew_research.tools import Tool, ToolOutput
from podcrew_research.tools.html_text import html_to_text, normalize

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
AddressClass = Literal["public", "private", "forbidden"]

SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/ld+json"})
USER_AGENT = "podcrew-research-agent/0.1"
UNTRUSTED_OPEN = "<untrusted>"
UNTRUSTED_CLOSE = "</untrusted>"
_DELIMITER = re.compile(r"<\s*/?\s*untrusted\s*>", re.IGNORECASE)
_NUMERIC_LABEL = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


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


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What `fetch_url` may reach and how much it may read."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_redirects: int = 3
    max_bytes: int = 1_000_000
    max_chars: int = 8000
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
    """A URL the guard accepted, and the one address it may be fetched from."""

    url: httpx.URL
    host: str
    address: IPAddress
    literal: bool = False

    def request(self, client: httpx.AsyncClient) -> httpx.Request:
        """A GET to the checked address, carrying the name in `Host` and in TLS SNI."""
        pinned = self.url.copy_with(host=str(self.address))
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https" and not self.literal:
            extensions["sni_hostname"] = self.host
        return client.build_request(
            "GET",
            pinned,
            headers={
                "Host": self.url.netloc.decode("ascii"),
                "User-Agent": USER_AGENT,
                "Accept": "text/html, text/plain;q=0.9, */*;q=0.1",
                # The pool keys connections by address alone; a reused TLS connection could
                # carry another name's identity. One connection per fetch avoids that.
                "Connection": "close",
            },
            extensions=extensions,
        )


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    title: str | None
    text: str
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)


def _parse(raw: str) -> httpx.URL:
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise BlockedURL(f"not a valid URL: {exc}") from exc
    if url.scheme not in SCHEMES:
        raise BlockedURL(f"only http and https URLs may be fetched, not {url.scheme or 'none'!r}")
    if url.userinfo:
        raise BlockedURL("URLs carrying credentials are refused")
    if not url.raw_host:
        raise BlockedURL("the URL has no host")
    return url


def _decode(body: bytes, response: httpx.Response) -> str:
    encoding = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    return body.decode(encoding, errors="replace")


def create_fetch_client(
    policy: EgressPolicy, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one client `fetch_url` shares; created in the lifespan, closed there.

    It ignores proxy environment variables (a proxy would resolve names itself, undoing the
    guard), never follows redirects on its own, and keeps no cookies between fetches, which
    serve unrelated runs.
    """
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(policy.timeout_s),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
    )


class Fetcher:
    """Fetches pages through the egress guard with one shared client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        policy: EgressPolicy,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._client = client
        self.policy = policy
        self._resolve = resolver

    async def check(self, url: httpx.URL) -> Target:
        """Accept `url` and choose the address to connect to, or raise `BlockedURL`."""
        host = url.raw_host.decode("ascii")
        if not self.policy.host_allowed(host):
            raise BlockedURL(f"{host} is not on the fetch allow-list")
        literal = parse_numeric_host(host)
        if literal is not None:
            candidates = [literal]
        else:
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                resolved = await self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise ToolError(f"cannot resolve {host}: {exc}") from exc
            if not resolved:
                raise ToolError(f"{host} has no addresses")
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

    async def fetch(self, raw_url: str, deadline: Deadline) -> Page:
        """The text of the page at `raw_url`, within the policy's limits and the deadline."""
        budget = min(self.policy.timeout_s, deadline.remaining())
        if budget <= 0:
            raise ToolError("no time left to fetch")
        try:
            async with asyncio.timeout(budget):
                return await self._fetch(_parse(raw_url))
        except TimeoutError as exc:
            raise ToolError(f"fetch timed out after {budget:.1f}s") from exc
        except httpx.TimeoutException as exc:
            raise ToolError(f"fetch timed out: {exc.__class__.__name__}") from exc
        except httpx.HTTPError as exc:
            raise ToolError(f"fetch failed: {exc.__class__.__name__}: {exc}") from exc

    async def _fetch(self, url: httpx.URL) -> Page:
        hops: list[str] = []
        for _ in range(self.policy.max_redirects + 1):
            target = await self.check(url)
            response = await self._client.send(target.request(self._client), stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    hops.append(str(url))
                    url = _parse(str(url.join(location)))
                    continue
                if response.status_code >= 300:
                    raise ToolError(f"{url} answered HTTP {response.status_code}")
                return await self._page(url, response, hops)
            finally:
                await response.aclose()
        raise BlockedURL(f"more than {self.policy.max_redirects} redirects")

    async def _page(self, url: httpx.URL, response: httpx.Response, hops: list[str]) -> Page:
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        is_html = media in HTML_TYPES
        if not (is_html or not media or media.startswith("text/") or media in TEXT_TYPES):
            raise ToolError(f"{url} is {media}, not text")
        chunks: list[bytes] = []
        size = 0
        truncated = False
        # Counted after decompression, so a small gzip bomb cannot inflate past the limit;
        # the rest of the body is never downloaded.
        async for chunk in response.aiter_bytes():
            room = self.policy.max_bytes - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
        body = _decode(b"".join(chunks), response)
        if is_html:
            title, text = html_to_text(body)
        else:
            title, text = None, normalize(body)
        if len(text) > self.policy.max_chars:
            text = text[: self.policy.max_chars]
            truncated = True
        return Page(url=str(url), title=title, text=text, truncated=truncated, redirects=hops)


def wrap_untrusted(text: str) -> str:
    """Page text between explicit delimiters the page itself cannot forge or close."""
    return f"{UNTRUSTED_OPEN}\n{_DELIMITER.sub('[delimiter removed]', text)}\n{UNTRUSTED_CLOSE}"


def page_json(page: Page) -> tuple[str, Source]:
    """The tool result the model reads (and the offline model parses), and its source."""
    source = Source(id=page.url, title=page.title or page.url, url=page.url)
    text = wrap_untrusted(page.text) + ("\n[page truncated]" if page.truncated else "")
    payload = {"source": source.model_dump(), "text": text}
    return json.dumps(payload, ensure_ascii=False), source


def fetch_url_tool(fetcher: Fetcher) -> Tool:
    """`fetch_url` as the loop sees it: validated input, the page as JSON out."""

    async def run(arguments: dict[str, Any], deadline: Deadline) -> ToolOutput:
        try:
            request = FetchUrlInput.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(f"invalid fetch_url input: {exc.errors()[0]['msg']}") from exc
        page = await fetcher.fetch(request.url, deadline)
        content, source = page_json(page)
        return ToolOutput(content=content, sources=[source])

    return Tool(spec=FETCH_URL_SPEC, run=run)
