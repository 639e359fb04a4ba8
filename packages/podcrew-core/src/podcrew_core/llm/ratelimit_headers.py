"""What the provider says about its rate limits, read from the `anthropic-ratelimit-*` headers.

Every Messages API response carries, for requests, input tokens and output tokens, the
limit of the account (`-limit`), what is left of it (`-remaining`) and when it is full again
(`-reset`, an RFC 3339 time); a 429 adds `retry-after`. The shared limiter
(`podcrew_core.llm.ratelimit`) lowers its rate from them, for every replica at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

HEADER_PREFIX = "anthropic-ratelimit-"
KINDS = ("requests", "input-tokens", "output-tokens")
"""The three limits an account has per model, in the order the limiter keeps them."""


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit as the provider reported it; None where a header was missing."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None  # seconds from the response until the bucket is full


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """The rate-limit headers of one response, per kind in `KINDS` order."""

    bounds: tuple[Bound, Bound, Bound]


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def _seconds_until(value: str | None, now: datetime) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def parse_limits(headers: Mapping[str, str], now: datetime | None = None) -> ProviderLimits | None:
    """The limits `headers` report, or None when they report none (a gateway that strips
    them, another provider)."""
    now = now or datetime.now(UTC)
    bounds = tuple(
        Bound(
            _int(headers.get(f"{HEADER_PREFIX}{kind}-limit")),
            _int(headers.get(f"{HEADER_PREFIX}{kind}-remaining")),
            _seconds_until(headers.get(f"{HEADER_PREFIX}{kind}-reset"), now),
        )
        for kind in KINDS
    )
    if all(b == Bound() for b in bounds):
        return None
    return ProviderLimits((bounds[0], bounds[1], bounds[2]))


def format_reset(moment: datetime) -> str:
    """`moment` as the `-reset` headers write it: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
