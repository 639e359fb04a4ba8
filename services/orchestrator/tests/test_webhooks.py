"""Completion webhooks: the signature a receiver verifies, delivery to a real server on
loopback (retried, never redirected), and SSRF targets refused before any packet leaves."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from podcrew_core.runtime.egress import EgressGuard, EgressPolicy, create_client
from podcrew_core.runtime.resilience import backoff_s, retry_after_s, should_retry_status
from podcrew_orchestrator.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    WebhookSettings,
    WebhooksNotConfigured,
    sign,
    signature_header,
    verify,
)

SECRET = b"0123456789abcdef-test-secret"
BODY = json.dumps({"id": "run-1", "status": "succeeded", "report": "Ünïcode ✓"}).encode()
HOOK_HOST = "hooks.test"

Resolver = Callable[[str, int], Awaitable[list[str]]]


# --- no packet leaves loopback, no real DNS ---------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces under the recording transport: any socket connection to a
    non-loopback address, or any real name lookup, fails the test."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            assert _is_loopback(str(address[0])), f"connection to {address}"
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        assert host is None or _is_loopback(str(host)), f"real DNS lookup of {host!r}"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class LoopbackOnly(httpx.AsyncBaseTransport):
    """A real transport that records every request and fails the test on any request to a
    non-loopback address."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        assert _is_loopback(request.url.host), f"a request was sent to {request.url}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def table(answers: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        try:
            return answers[host]
        except KeyError:
            raise OSError(f"no such host {host}") from None

    return resolve


RESOLVER_TABLE = {
    HOOK_HOST: ["127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "rebind.example": ["93.184.215.14", "192.168.0.10"],
}


# --- a receiver on loopback -------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Receiver(ThreadingHTTPServer):
    """Answers from a script (then 200), recording every request it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.script: list[Reply] = []
        self.received: list[Received] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/hook", host: str = HOOK_HOST) -> str:
        return f"http://{host}:{self.port}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that timed out and hung up is expected here


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.received.append(
            Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        reply = self.server.script.pop(0) if self.server.script else Reply()
        time.sleep(reply.delay_s)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = _answer
    do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Harness:
    sender: WebhookSender
    transport: LoopbackOnly
    sleeps: list[float]
    resolved: list[str]


@pytest.fixture
async def harness() -> AsyncIterator[Callable[..., Harness]]:
    """Builds a sender on the loopback-only transport, the table resolver and a fake sleep."""
    clients: list[httpx.AsyncClient] = []

    def build(
        *,
        resolver: Resolver | None = None,
        max_attempts: int = 6,
        **policy: Any,
    ) -> Harness:
        sleeps: list[float] = []
        resolved: list[str] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        rules = EgressPolicy(**policy)
        transport = LoopbackOnly()
        client = create_client(rules, transport)
        clients.append(client)
        guard = EgressGuard(rules, resolver or table(RESOLVER_TABLE, resolved))
        sender = WebhookSender(
            client, guard, SECRET, max_attempts=max_attempts, sleep=sleep, rng=random.Random(7)
        )
        return Harness(sender, transport, sleeps, resolved)

    yield build
    for client in clients:
        await client.aclose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def deliveries(outcome: str) -> float:
    return sample("podcrew_webhook_deliveries_total", outcome=outcome)


def attempts(status: str) -> float:
    return sample("podcrew_webhook_attempts_total", status=status)


# --- signing --------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, BODY) == expected
    assert signature_header(SECRET, 1700000000, BODY) == f"v1={expected}"


def test_signature_round_trip() -> None:
    header = signature_header(SECRET, 1700000000, BODY)
    assert verify(SECRET, 1700000000, BODY, header, now=1700000000)
    assert verify(SECRET, 1700000000, BODY, header, now=1700000000 + 300)
    assert verify(SECRET, 1700000000, BODY, header, now=1700000000 - 300)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "mangle"),
    [
        (SECRET, 1700000000, BODY + b" ", None),  # body changed
        (SECRET, 1700000000, BODY.replace(b"succeeded", b"failed"), None),
        (SECRET, 1700000001, BODY, None),  # timestamp changed
        (b"another-secret-of-16+", 1700000000, BODY, None),  # wrong key
        (SECRET, 1700000000, BODY, lambda h: h.replace("v1=", "v0=")),  # unknown scheme
        (SECRET, 1700000000, BODY, lambda h: h.removeprefix("v1=")),  # bare digest
        (SECRET, 1700000000, BODY, lambda h: h[:-1] + ("0" if h[-1] != "0" else "1")),
        (SECRET, 1700000000, BODY, lambda h: "v1="),
        (SECRET, 1700000000, BODY, lambda h: "garbage"),
    ],
)
def test_tampering_is_detected(
    secret: bytes, timestamp: int, body: bytes, mangle: Callable[[str], str] | None
) -> None:
    header = signature_header(SECRET, 1700000000, BODY)
    if mangle is not None:
        header = mangle(header)
    assert not verify(secret, timestamp, body, header, now=1700000000)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_signatures_outside_the_replay_window_are_refused(skew: int) -> None:
    header = signature_header(SECRET, 1700000000, BODY)
    assert not verify(SECRET, 1700000000, BODY, header, now=1700000000 + skew)
    assert verify(SECRET, 1700000000, BODY, header, now=1700000000 + skew, tolerance_s=abs(skew))


# --- retry policy -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_overload_and_server_errors_are_retryable(status: int) -> None:
    assert should_retry_status(status)


@pytest.mark.parametrize("status", [200, 301, 302, 307, 400, 401, 403, 404, 409, 410, 413, 422])
def test_other_statuses_are_final(status: int) -> None:
    assert not should_retry_status(status)


def test_retry_after_reads_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(" 0 ", now) == 0.0
    assert retry_after_s("Tue, 14 Nov 2023 22:13:40 GMT", now) == pytest.approx(20.0)
    assert retry_after_s("Tue, 14 Nov 2023 22:13:00 GMT", now) == 0.0  # in the past
    assert retry_after_s(None, now) is None
    assert retry_after_s("soon", now) is None
    assert retry_after_s("-3", now) is None


def test_backoff_is_jittered_exponential_capped_and_yields_to_retry_after() -> None:
    rng = random.Random(1)
    for attempt in range(10):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_s(attempt, None, base_s=0.5, max_s=30.0, rng=rng) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jitter spreads over the whole range
    assert backoff_s(0, 12.0, base_s=0.5, max_s=30.0, rng=rng) == 12.0


# --- delivery to a real server on loopback ---------------------------------------------------


async def test_two_503s_then_success_is_three_signed_attempts_of_one_delivery(
    receiver: Receiver, harness: Callable[..., Harness]
) -> None:
    receiver.script = [Reply(503), Reply(503), Reply(200)]
    h = harness(allow_private=True)
    before = (deliveries("delivered"), attempts("5xx"), attempts("2xx"))

    result = await h.sender.deliver(receiver.url(), BODY)

    assert result.delivered
    assert (result.outcome, result.attempts, result.status, result.error) == (
        "delivered",
        3,
        200,
        None,
    )
    assert len(receiver.received) == 3
    ids = {r.headers[DELIVERY_HEADER.lower()] for r in receiver.received}
    assert ids == {result.delivery_id}
    for request in receiver.received:
        assert (request.method, request.path, request.body) == ("POST", "/hook", BODY)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == f"{HOOK_HOST}:{receiver.port}"  # name kept, IP pinned
        timestamp = int(request.headers[TIMESTAMP_HEADER.lower()])
        assert abs(timestamp - time.time()) < 60
        assert verify(
            SECRET, timestamp, request.body, request.headers[SIGNATURE_HEADER.lower()], time.time()
        )
    assert [str(r.url) for r in h.transport.sent] == [f"http://127.0.0.1:{receiver.port}/hook"] * 3
    assert h.resolved == [HOOK_HOST] * 3  # re-checked before every attempt
    assert len(h.sleeps) == 2
    assert 0.0 <= h.sleeps[0] <= 0.5
    assert 0.0 <= h.sleeps[1] <= 1.0
    assert (deliveries("delivered"), attempts("5xx"), attempts("2xx")) == (
        before[0] + 1,
        before[1] + 2,
        before[2] + 1,
    )


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_a_client_error_is_not_retried(
    receiver: Receiver, harness: Callable[..., Harness], status: int
) -> None:
    receiver.script = [Reply(status)]
    h = harness(allow_private=True)
    before = (deliveries("rejected"), attempts("4xx"))

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("rejected", 1, status)
    assert result.error == f"HTTP {status}"
    assert len(receiver.received) == 1
    assert h.sleeps == []
    assert (deliveries("rejected"), attempts("4xx")) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(
    "location", ["http://169.254.169.254/latest/meta-data/", "/elsewhere", "http://10.0.0.1/"]
)
async def test_a_redirect_is_a_failure_and_is_not_followed(
    receiver: Receiver, harness: Callable[..., Harness], status: int, location: str
) -> None:
    receiver.script = [Reply(status, {"Location": location})]
    h = harness(allow_private=True)

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("rejected", 1, status)
    assert "not followed" in (result.error or "")
    assert [r.path for r in receiver.received] == ["/hook"]
    assert len(h.transport.sent) == 1
    assert h.sleeps == []


async def test_retry_after_is_honoured(receiver: Receiver, harness: Callable[..., Harness]) -> None:
    receiver.script = [Reply(429, {"Retry-After": "3"}), Reply(408), Reply(204)]
    h = harness(allow_private=True)

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("delivered", 3, 204)
    assert h.sleeps[0] == 3.0
    assert h.sleeps[1] <= 1.0


async def test_retry_after_beyond_the_longest_wait_gives_up(
    receiver: Receiver, harness: Callable[..., Harness]
) -> None:
    receiver.script = [Reply(503, {"Retry-After": "3600"})]
    h = harness(allow_private=True)

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("gave_up", 1, 503)
    assert "3600" in (result.error or "")
    assert h.sleeps == []


async def test_retries_stop_at_max_attempts(
    receiver: Receiver, harness: Callable[..., Harness]
) -> None:
    receiver.script = [Reply(500)] * 5
    h = harness(allow_private=True, max_attempts=3)
    before = deliveries("gave_up")

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status, result.error) == (
        "gave_up",
        3,
        500,
        "HTTP 500",
    )
    assert len(receiver.received) == 3
    assert len(h.sleeps) == 2
    assert deliveries("gave_up") == before + 1


async def test_connection_errors_are_retried(harness: Callable[..., Harness]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    h = harness(allow_private=True, max_attempts=3)
    before = attempts("connection_error")

    result = await h.sender.deliver(f"http://{HOOK_HOST}:{port}/hook", BODY)

    assert (result.outcome, result.attempts, result.status) == ("gave_up", 3, None)
    assert "ConnectError" in (result.error or "")
    assert len(h.transport.sent) == 3
    assert attempts("connection_error") == before + 3


async def test_a_timeout_is_retried(receiver: Receiver, harness: Callable[..., Harness]) -> None:
    receiver.script = [Reply(200, delay_s=1.0), Reply(200)]
    h = harness(allow_private=True, timeout_s=0.2)

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("delivered", 2, 200)
    assert len(h.sleeps) == 1
    ids = {r.headers[DELIVERY_HEADER.lower()] for r in receiver.received}
    assert ids == {result.delivery_id}  # the receiver dedupes the one it already stored


async def test_a_name_that_stops_resolving_is_retried(harness: Callable[..., Harness]) -> None:
    h = harness(allow_private=True, max_attempts=2)
    result = await h.sender.deliver("http://gone.example/hook", BODY)
    assert (result.outcome, result.attempts) == ("gave_up", 2)
    assert "cannot resolve" in (result.error or "")
    assert h.transport.sent == []


async def test_every_attempt_rechecks_the_url(
    receiver: Receiver, harness: Callable[..., Harness]
) -> None:
    # First answer: the receiver on loopback (allowed in dev); then DNS is rebound to the
    # metadata service, which the guard refuses even in dev, before the retry is sent.
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    receiver.script = [Reply(503)]
    h = harness(allow_private=True, resolver=rebinding)

    result = await h.sender.deliver(receiver.url(), BODY)

    assert (result.outcome, result.attempts, result.status) == ("blocked", 2, None)
    assert "169.254.169.254" in (result.error or "")
    assert len(receiver.received) == 1
    assert len(h.transport.sent) == 1


SSRF_TARGETS = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2130706433:{port}/hook",
    "http://0177.0.0.1:{port}/hook",
    "http://0x7f.1:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://internal.example/",
    "http://metadata.example/",
    "https://rebind.example/",
    "https://user:pw@hooks.test/",
    "ftp://hooks.test/",
    "file:///etc/passwd",
    "not a url",
]


@pytest.mark.parametrize("template", SSRF_TARGETS)
async def test_ssrf_targets_are_refused_before_any_packet(
    receiver: Receiver, harness: Callable[..., Harness], template: str
) -> None:
    url = template.format(port=receiver.port)
    h = harness()  # allow_private=False: production
    before = (deliveries("blocked"), attempts("blocked"))

    result = await h.sender.deliver(url, BODY)

    assert (result.outcome, result.attempts, result.status) == ("blocked", 1, None)
    assert result.error
    assert h.transport.sent == []
    assert receiver.received == []
    assert h.sleeps == []  # a refusal is never retried
    assert (deliveries("blocked"), attempts("blocked")) == (before[0] + 1, before[1] + 1)


async def test_dev_mode_still_refuses_the_metadata_service(
    harness: Callable[..., Harness],
) -> None:
    h = harness(allow_private=True)
    for url in ("http://169.254.169.254/", "http://metadata.example/", "http://[fe80::1]/"):
        result = await h.sender.deliver(url, BODY)
        assert result.outcome == "blocked", url
    assert h.transport.sent == []


async def test_the_allow_list_limits_where_webhooks_go(
    receiver: Receiver, harness: Callable[..., Harness]
) -> None:
    h = harness(allow_private=True, allowed_hosts=("hooks.test",))
    assert (await h.sender.deliver(receiver.url(), BODY)).delivered
    refused = await h.sender.deliver(receiver.url(host="localhost"), BODY)
    assert refused.outcome == "blocked"
    assert "allow-list" in (refused.error or "")
    assert len(receiver.received) == 1


# --- settings --------------------------------------------------------------------------------


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_WEBHOOK_SECRET", SECRET.decode())
    monkeypatch.setenv("PODCREW_WEBHOOK_ALLOWED_HOSTS", '["hooks.example.com"]')
    monkeypatch.setenv("PODCREW_WEBHOOK_TIMEOUT_S", "3")
    monkeypatch.setenv("PODCREW_WEBHOOK_MAX_ATTEMPTS", "4")
    settings = WebhookSettings()
    assert settings.signing_secret() == SECRET
    assert settings.policy() == EgressPolicy(
        allow_private=False, allowed_hosts=("hooks.example.com",), timeout_s=3.0
    )
    assert settings.max_attempts == 4
    assert SECRET.decode() not in repr(settings)


@pytest.mark.parametrize("value", [None, ""])
async def test_without_a_secret_webhooks_are_refused_not_sent_unsigned(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("PODCREW_WEBHOOK_SECRET", raising=False)
    else:
        monkeypatch.setenv("PODCREW_WEBHOOK_SECRET", value)
    settings = WebhookSettings()
    assert settings.secret is None
    async with create_client(settings.policy(), LoopbackOnly()) as client:
        with pytest.raises(WebhooksNotConfigured, match="PODCREW_WEBHOOK_SECRET") as info:
            WebhookSender.from_settings(settings, client, table(RESOLVER_TABLE))
        with pytest.raises(ValueError, match="secret"):
            WebhookSender(client, EgressGuard(settings.policy()), b"")
    assert info.value.status == 400
    assert info.value.slug == "webhooks-not-configured"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        WebhookSettings(secret="short")


async def test_a_sender_from_settings_uses_their_policy_and_attempts(
    receiver: Receiver,
) -> None:
    settings = WebhookSettings(
        secret=SECRET.decode(),
        allow_private=True,
        max_attempts=1,
    )
    receiver.script = [Reply(503), Reply(200)]
    async with create_client(settings.policy(), LoopbackOnly()) as client:
        sender = WebhookSender.from_settings(settings, client, table(RESOLVER_TABLE))
        result = await sender.deliver(receiver.url(), BODY)
    assert (result.outcome, result.attempts, result.status) == ("gave_up", 1, 503)
    header = receiver.received[0].headers[SIGNATURE_HEADER.lower()]
    timestamp = int(receiver.received[0].headers[TIMESTAMP_HEADER.lower()])
    assert verify(SECRET, timestamp, BODY, header, time.time())


def test_every_setting_is_described() -> None:
    for name, info in WebhookSettings.model_fields.items():
        assert info.description, name
