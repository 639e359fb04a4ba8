"""The client's retry policy: named constants and pure functions, run by tenacity.

A call is repeated only when its error says the same call may succeed (`retryable`: a 429,
a 503, another 5xx, a lost connection); the wait is the server's `Retry-After` when it gives
one within `MAX_RETRY_AFTER_S`, else a jittered exponential backoff. Submissions are safe to
repeat because every one carries an `Idempotency-Key` (see `_client.create_request`).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from podcrew_core.contracts.errors import PodcrewError

DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
# Advice beyond this is not followed: the backoff is used instead, as the anthropic SDK does.
MAX_RETRY_AFTER_S = 60.0
_JITTER = 0.25


def should_retry(error: BaseException) -> bool:
    """Whether repeating the call that raised `error` may succeed."""
    return isinstance(error, PodcrewError) and error.retryable


def retry_after_s(error: BaseException, now: float | None = None) -> float | None:
    """The server's `Retry-After` (seconds or an HTTP date), if it gave a usable one."""
    headers = error.headers if isinstance(error, PodcrewError) else {}
    advice = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if advice is None:
        return None
    try:
        seconds = float(advice)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(advice) if advice.strip() else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if seconds <= MAX_RETRY_AFTER_S else None


def retry_delay(
    attempt: int, error: BaseException | None, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before attempt `attempt + 1` after `error`."""
    advice = retry_after_s(error) if error is not None else None
    if advice is not None:
        return advice
    backoff: float = min(INITIAL_RETRY_DELAY_S * 2.0 ** (attempt - 1), MAX_RETRY_DELAY_S)
    return backoff * (1 - _JITTER * rand())


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    return retry_delay(state.attempt_number, error)


def retrying(max_retries: int, sleep: Callable[[float], None] = time.sleep) -> Retrying:
    """The policy for a blocking client."""
    return Retrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait,
        sleep=sleep,
        reraise=True,
    )


def async_retrying(
    max_retries: int, sleep: Callable[[float], Awaitable[None]] | None = None
) -> AsyncRetrying:
    """The same policy for an asyncio client."""
    extra = {"sleep": sleep} if sleep is not None else {}
    return AsyncRetrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait,
        reraise=True,
        **extra,  # type: ignore[arg-type]
    )
