"""Completion webhooks: when a run that named a `callback_url` ends, POST its final JSON there.

The callback URL is chosen by whoever submitted the run, so every attempt goes through the
egress guard (`podcrew_core.runtime.egress`): the URL is re-checked and re-resolved before each
attempt (DNS may have changed since the last one) and the POST goes to the address that
was checked. Redirects are never followed: a 3xx answer is a failed delivery.

Verifying a delivery (receiver side)
------------------------------------
Every delivery carries these headers::

    Content-Type: application/json
    Podcrew-Delivery: 5f0c2c1e-...        one id per delivery, the same on every retry
    Podcrew-Timestamp: 1718000000         unix seconds when this attempt was signed
    Podcrew-Signature: v1=<hex>           HMAC-SHA256, keyed with the shared secret

To verify, compute `HMAC-SHA256(secret, "<Podcrew-Timestamp>." + raw_body)` over the raw
request body bytes (before any JSON parsing), hex-encode it, and compare it with the hex
after `v1=` in constant time (`hmac.compare_digest`). Reject the request if the timestamp
is more than 5 minutes (300 s) away from your clock, so a captured request cannot be
replayed later, and drop a `Podcrew-Delivery` id you have already processed: a retry after
a lost response delivers the same run twice. `verify()` below does all but the dedupe.

Answer 2xx once the delivery is stored. 408, 429 and 5xx (and no answer at all) are
retried with jittered exponential backoff, honouring `Retry-After`; any other status is a
final rejection.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

import httpx
import structlog
from prometheus_client import Counter
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from podcrew_core.contracts.errors import BadRequest, BlockedURL
from podcrew_core.runtime.egress import (
    EgressGuard,
    EgressPolicy,
    Resolver,
    UnresolvableHost,
    system_resolver,
)
from podcrew_core.runtime.resilience import backoff_s, retry_after_s, should_retry_status
from podcrew_core.runtime.settings import PodcrewSettings

log = structlog.get_logger(__name__)

SIGNATURE_VERSION: Final = "v1"
DELIVERY_HEADER: Final = "Podcrew-Delivery"
TIMESTAMP_HEADER: Final = "Podcrew-Timestamp"
SIGNATURE_HEADER: Final = "Podcrew-Signature"
REPLAY_TOLERANCE_S: Final = 300
MIN_SECRET_CHARS: Final = 16
USER_AGENT: Final = "podcrew-webhooks/0.1"

DEFAULT_MAX_ATTEMPTS: Final = 6
DEFAULT_BASE_DELAY_S: Final = 0.5
DEFAULT_MAX_DELAY_S: Final = 30.0

Outcome = Literal["delivered", "rejected", "blocked", "gave_up"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("delivered", "rejected", "blocked", "gave_up")
# Attempt labels: a status class, the two retryable 4xx, or why no status came back.
ATTEMPT_LABELS: Final = (
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "408",
    "429",
    "5xx",
    "timeout",
    "connection_error",
    "dns_error",
    "blocked",
    "other",
)

DELIVERIES = Counter(
    "podcrew_webhook_deliveries",
    "Webhook deliveries by outcome: delivered (2xx), rejected (3xx or a non-retryable 4xx), "
    "blocked (refused by the egress guard), gave_up (retries exhausted).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "podcrew_webhook_attempts",
    "Webhook delivery attempts by result: a status class (1xx to 5xx, other), 408, 429, "
    "or timeout, connection_error, dns_error, blocked.",
    ["status"],
)
for _outcome in OUTCOMES:
    DELIVERIES.labels(_outcome)
for _label in ATTEMPT_LABELS:
    ATTEMPTS.labels(_label)


class WebhooksNotConfigured(BadRequest):
    """A webhook was asked for, but no signing secret is configured; podcrew never sends
    an unsigned webhook."""

    slug = "webhooks-not-configured"
    title = "Webhooks are not configured on this server"


# --- signing ------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + body` under `secret` (the `v1` scheme)."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Podcrew-Signature` header value: `v1=<hex>`."""
    return f"{SIGNATURE_VERSION}={sign(secret, timestamp, body)}"


def verify(
    secret: bytes,
    timestamp: int,
    body: bytes,
    signature: str,
    now: float,
    tolerance_s: float = REPLAY_TOLERANCE_S,
) -> bool:
    """Whether `signature` (a `Podcrew-Signature` header value) signs `body` at `timestamp`
    under `secret`, and `timestamp` is within `tolerance_s` of `now` (either way)."""
    if abs(now - timestamp) > tolerance_s:
        return False
    version, sep, digest = signature.strip().partition("=")
    if not sep or version != SIGNATURE_VERSION:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), digest.encode())


def _status_label(status: int) -> str:
    if status in (408, 429):
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


# --- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How a delivery ended.

    `attempts` counts tries, including one the guard stopped before anything was sent;
    `status` is the HTTP status of the last attempt (None if it got no answer); `error`
    says why a delivery that did not succeed failed.
    """

    delivery_id: str
    outcome: Outcome
    attempts: int
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one attempt came to: its metric label, the delivery's outcome if the attempt
    ends it (None: it may be retried), the HTTP status, why it failed, and the wait the
    receiver asked for (`Retry-After`)."""

    label: str
    outcome: Outcome | None = None
    status: int | None = None
    error: str | None = None
    advice: float | None = None


class WebhookSender:
    """Signs and POSTs webhook bodies through the egress guard, retrying what may succeed.

    The client should come from `podcrew_core.runtime.egress.create_client` (no proxies, no
    redirects, no cookies); it is created and closed by the owner's lifespan.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        guard: EgressGuard,
        secret: bytes,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        base_delay_s: float = DEFAULT_BASE_DELAY_S,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook signing secret is required; unsigned webhooks are refused")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = client
        self._guard = guard
        self._secret = secret
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    @classmethod
    def from_settings(
        cls,
        settings: WebhookSettings,
        client: httpx.AsyncClient,
        resolver: Resolver = system_resolver,
    ) -> WebhookSender:
        """A sender as the settings describe it; `WebhooksNotConfigured` without a secret."""
        return cls(
            client,
            EgressGuard(settings.policy(), resolver),
            settings.signing_secret(),
            max_attempts=settings.max_attempts,
        )

    def _headers(self, delivery_id: str, body: bytes) -> dict[str, str]:
        # Signed per attempt: a retry minutes later must still fall inside the replay window.
        timestamp = int(self._clock())
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(self._secret, timestamp, body),
        }

    async def deliver(
        self, url: str, body: bytes, delivery_id: str | None = None
    ) -> DeliveryResult:
        """POST `body` (the run's final JSON) to `url` until it is accepted or cannot be,
        as delivery `delivery_id` (a fresh one if None).

        Never raises for a failed delivery; the result says how it ended.
        """
        # A loop rather than tenacity: each attempt ends in a value (a status, a refusal)
        # that decides both the outcome and the wait (`Retry-After`), and the result is a
        # value, not an exception. Expressing that in tenacity means smuggling responses
        # through exceptions into a custom wait and stop; the loop says it directly.
        delivery_id = delivery_id or str(uuid.uuid4())
        attempt = 0
        while True:
            attempt += 1
            tried = await self._attempt(url, delivery_id, body)
            ATTEMPTS.labels(tried.label).inc()
            if tried.outcome is None:
                tried = self._give_up_or_retry(tried, attempt)
            if tried.outcome is not None:
                return self._finish(
                    url, delivery_id, tried.outcome, attempt, tried.status, tried.error
                )
            delay = backoff_s(
                attempt - 1,
                tried.advice,
                base_s=self.base_delay_s,
                max_s=self.max_delay_s,
                rng=self._rng,
            )
            await self._sleep(delay)

    async def _attempt(self, url: str, delivery_id: str, body: bytes) -> _Attempt:
        """One POST through the guard, within the policy's time limit, and what it came to."""
        timeout_s = self._guard.policy.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                target = await self._guard.check(url)
                request = target.request(
                    self._client,
                    "POST",
                    headers=self._headers(delivery_id, body),
                    content=body,
                )
                # Streamed and closed unread: the receiver's body is of no interest, and
                # a hostile receiver could make it arbitrarily large.
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except BlockedURL as exc:
            return _Attempt("blocked", "blocked", error=exc.detail)
        except UnresolvableHost as exc:
            return _Attempt("dns_error", error=exc.detail)
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt("timeout", error=f"no answer within {timeout_s:g}s")
        except httpx.TransportError as exc:
            return _Attempt("connection_error", error=f"{exc.__class__.__name__}: {exc}")
        return self._answered(response)

    def _answered(self, response: httpx.Response) -> _Attempt:
        """A 2xx delivers, a status worth retrying may be tried again, any other rejects."""
        status = response.status_code
        label, error = _status_label(status), f"HTTP {status}"
        if 200 <= status <= 299:
            return _Attempt(label, "delivered", status)
        if not should_retry_status(status):
            if 300 <= status <= 399:
                error += " (redirects are not followed)"
            return _Attempt(label, "rejected", status, error)
        advice = retry_after_s(response.headers.get("retry-after"), self._clock())
        return _Attempt(label, None, status, error, advice)

    def _give_up_or_retry(self, tried: _Attempt, attempt: int) -> _Attempt:
        """`tried` as the delivery's last attempt if no attempt is left, or if the receiver
        asks for a longer wait than the sender allows; else unchanged, to be retried."""
        if attempt >= self.max_attempts:
            return replace(tried, outcome="gave_up")
        if tried.advice is not None and tried.advice > self.max_delay_s:
            error = (
                f"{tried.error}; the receiver asked to wait {tried.advice:g}s, "
                f"more than {self.max_delay_s:g}s"
            )
            return replace(tried, outcome="gave_up", error=error)
        return tried

    @staticmethod
    def _finish(
        url: str,
        delivery_id: str,
        outcome: Outcome,
        attempts: int,
        status: int | None,
        error: str | None,
    ) -> DeliveryResult:
        DELIVERIES.labels(outcome).inc()
        # The host only: callback URLs often carry a token in their path or query.
        host = httpx.URL(url).host if outcome != "blocked" else None
        event = log.info if outcome == "delivered" else log.warning
        event(
            "webhook_" + outcome,
            delivery_id=delivery_id,
            host=host,
            attempts=attempts,
            status=status,
            error=error,
        )
        return DeliveryResult(delivery_id, outcome, attempts, status, error)


# --- settings -------------------------------------------------------------------------------


class WebhookSettings(PodcrewSettings):
    """`PODCREW_WEBHOOK_*`: the signing secret and the egress guard for completion webhooks.
    Built in the lifespan of whichever process delivers them, never at import."""

    model_config = SettingsConfigDict(
        env_prefix="PODCREW_WEBHOOK_", extra="ignore", use_attribute_docstrings=True
    )

    secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key that signs every webhook (Podcrew-Signature), at least "
        f"{MIN_SECRET_CHARS} characters. Unset (or empty) disables webhooks: a run that asks "
        "for one is refused, never sent unsigned.",
    )
    allow_private: bool = False
    """Tests and local development only: let webhooks reach loopback and private addresses.
    Link-local (cloud metadata), multicast and reserved stay refused."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """If set, webhooks only go to these hosts and their subdomains; empty means any public host."""
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Time limit of one delivery attempt (resolution, connection and answer)."""
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    """Attempts per delivery, the first included; 408, 429, 5xx and network errors are retried
    with jittered exponential backoff."""

    @field_validator("secret")
    @classmethod
    def _secret_strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the webhook secret must be at least {MIN_SECRET_CHARS} characters")
        return value

    def policy(self) -> EgressPolicy:
        """The egress guard's policy for webhook deliveries."""
        return EgressPolicy(
            allow_private=self.allow_private,
            allowed_hosts=tuple(self.allowed_hosts),
            timeout_s=self.timeout_s,
        )

    def signing_secret(self) -> bytes:
        """The secret as bytes, or `WebhooksNotConfigured` when none is set."""
        if self.secret is None:
            raise WebhooksNotConfigured(
                "this server has no webhook signing secret (PODCREW_WEBHOOK_SECRET), so it "
                "does not send webhooks; submit the run without callback_url"
            )
        return self.secret.get_secret_value().encode()
