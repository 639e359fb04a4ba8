"""When to try again: the retry policy as constants and pure functions.

The parsing of `Retry-After`, the retryable statuses and the jittered backoff are podcrew's
one retry policy (`podcrew_core.runtime.resilience`); this module only adds the operator's
bounds.
"""

from __future__ import annotations

import random

from podcrew_core.runtime.resilience import backoff_s, retry_after_s, should_retry_status

__all__ = ["MAX_RETRY_AFTER_S", "delay_s", "next_poll_s", "retry_after_s", "should_retry_status"]

# A Retry-After is honoured as given, up to this: an absurd one (a day) is not a plan.
MAX_RETRY_AFTER_S = 600.0
POLL_GROWTH = 1.5
_JITTER = random.Random()  # noqa: S311 - jitter, not secrets


def delay_s(
    attempt: int,
    retry_after: float | None,
    *,
    base_s: float,
    max_s: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds before attempt `attempt + 1`: the server's Retry-After when it gave one,
    else exponential backoff with full jitter, never below a tenth of `base_s`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    wait = backoff_s(attempt, None, base_s=base_s, max_s=max_s, rng=rng or _JITTER)
    return max(wait, base_s / 10)


def next_poll_s(current: float, *, changed: bool, first_s: float, max_s: float) -> float:
    """The wait before the next read of a run: back to `first_s` after a change, else
    half as long again, up to `max_s`."""
    if changed:
        return first_s
    return min(current * POLL_GROWTH, max_s)
