"""The simulated account's rate limits, enforced as the Messages API enforces them.

Per model, three token buckets that hold a minute of their limit and refill continuously:
requests, input tokens (uncached input and cache writes; cache reads do not count, as on
the API for current models) and output tokens. A call is refused with 429 `rate_limit_error`
and a `retry-after` while a bucket is short: no request left, or tokens owed by earlier calls
(a call's tokens are only known once it is answered, so a bucket may go below zero, and the
next calls wait until it is paid back). Every answer, refusals included, carries the
`anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}` headers.
A limit of 0 is no limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from podcrew_core.llm.ratelimit_headers import HEADER_PREFIX, KINDS, format_reset

WINDOW_S = 60.0


@dataclass
class _Bucket:
    limit: int
    level: float
    at: float

    def refill(self, limit: int, now: float) -> None:
        if limit != self.limit:  # changed at runtime: keep what was used of the old one
            self.level += limit - self.limit
            self.limit = limit
        self.level = min(float(limit), self.level + limit / WINDOW_S * (now - self.at))
        self.at = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, (level - self.level) * WINDOW_S / self.limit) if self.limit else 0.0


@dataclass
class AccountLimits:
    """The buckets of every model the account called, on `clock`."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, list[_Bucket]] = field(default_factory=dict)

    def _refilled(self, model: str, limits: tuple[int, int, int]) -> list[_Bucket]:
        now = self.clock()
        buckets = self._buckets.setdefault(
            model, [_Bucket(limit, float(limit), now) for limit in limits]
        )
        for bucket, limit in zip(buckets, limits, strict=True):
            bucket.refill(limit, now)
        return buckets

    def admit(self, model: str, limits: tuple[int, int, int]) -> float:
        """0 if a call to `model` may go ahead now (and its request is taken), else the
        seconds until it may."""
        buckets = self._refilled(model, limits)
        # A request needs one left; tokens need nothing owed.
        wait = max(b.seconds_until(need) for b, need in zip(buckets, (1.0, 0.0, 0.0), strict=True))
        if wait == 0 and buckets[0].limit:
            buckets[0].level -= 1
        return wait

    def answered(
        self, model: str, limits: tuple[int, int, int], usage: dict[str, int]
    ) -> dict[str, str]:
        """Count an answered call's tokens; the headers of its answer."""
        buckets = self._refilled(model, limits)
        buckets[1].level -= usage["input_tokens"] + usage["cache_creation_input_tokens"]
        buckets[2].level -= usage["output_tokens"]
        return self.headers(model, limits)

    def headers(self, model: str, limits: tuple[int, int, int]) -> dict[str, str]:
        """The rate-limit headers of an answer about `model`, none for limits that are off."""
        buckets = self._refilled(model, limits)
        now = datetime.now(UTC)
        headers: dict[str, str] = {}
        for kind, bucket in zip(KINDS, buckets, strict=True):
            if not bucket.limit:
                continue
            full_in = timedelta(seconds=bucket.seconds_until(bucket.limit))
            headers[f"{HEADER_PREFIX}{kind}-limit"] = str(bucket.limit)
            headers[f"{HEADER_PREFIX}{kind}-remaining"] = str(max(0, math.floor(bucket.level)))
            headers[f"{HEADER_PREFIX}{kind}-reset"] = format_reset(now + full_in)
        return headers


def retry_after(wait_s: float) -> str:
    """`retry-after` as the API sends it: whole seconds, at least one."""
    return str(max(1, math.ceil(wait_s)))
