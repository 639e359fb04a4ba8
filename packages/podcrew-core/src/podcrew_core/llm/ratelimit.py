"""One rate limit for the whole deployment: the provider account's, shared through Redis.

The provider limits an account, per model, in requests, input tokens and output tokens per
minute, however many replicas call it. So before every LLM call, in whichever process makes
it, the call takes its share from three token buckets kept in Redis under the account and
the model (`{prefix}:ratelimit:{account}:{<model>}`, the model a hash tag): one request,
the input tokens estimated from the prompt, and `max_tokens` of output. After the call the
estimate is corrected with the real usage and the unused output is given back. One Lua
script per acquire refills and takes from the three buckets at once, on Redis' clock, so
replicas never disagree on what is left and never take the same capacity twice.

The buckets follow what the provider says, for every replica at once: the `remaining` of
its `anthropic-ratelimit-*` headers lowers a bucket that holds more, a `limit` below the
configured one replaces it, and a 429 empties the buckets, pauses every caller for its
`retry-after` and halves the rate. The rate then climbs back in a straight line (additive
increase), by `1 / recovery_s` of the configured rate each second, up to the configured rate.

A call that has to wait does so within its run's deadline: if the capacity it needs comes
later than the deadline allows, it fails at once with `deadline-exceeded`, without calling.
Calls of interactive runs go first: while one waits, calls of `priority: "batch"` runs take
nothing.

If Redis cannot be reached the call goes ahead unlimited (and is counted), as the provider's
own 429s and the retry policy still bound it; a limiter that failed closed would turn a
Redis outage into an LLM outage.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from podcrew_core.contracts.errors import DeadlineExceeded, LLMError, LLMRateLimited
from podcrew_core.contracts.hop import MIN_REMAINING_S
from podcrew_core.llm.base import LLMProvider
from podcrew_core.llm.ratelimit_headers import ProviderLimits
from podcrew_core.llm.settings import LLMSettings
from podcrew_core.llm.tokens import estimate_tokens
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    StreamEnd,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
)
from podcrew_core.runtime.metrics import (
    LLM_RATELIMIT_IN_USE,
    LLM_RATELIMIT_THROTTLED,
    LLM_RATELIMIT_WAIT,
)
from podcrew_core.runtime.redis import RedisClient
from podcrew_core.runtime.scope import current_hop, current_priority

log = structlog.get_logger(__name__)

LIMITS = ("requests", "input_tokens", "output_tokens")
# A waiting call looks again at least this often, so it sees a pause lifted or a batch call
# sees the interactive ones done; the marker that holds batch calls back outlives one look.
MAX_POLL_S = 0.5
_MARKER_TTL_MS = 1000
# A 429 with no retry-after pauses everyone this long.
DEFAULT_PAUSE_S = 1.0
# Without a hop (no run), a call waits at most this long for capacity.
NO_HOP_MAX_WAIT_S = 60.0

# Shared by both scripts: read the bucket, refill it for the time since it was last written
# (at the rate the provider last allowed, recovering by elapsed / recovery_s), on Redis' clock.
# ARGV[1..3]: configured limits per minute; ARGV[4]: burst seconds; ARGV[5]: recovery seconds.
_REFILL = """
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'r', 'i', 'o', 't', 's', 'p', 'lr', 'li', 'lo')
local burst, recovery = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = tonumber(f[4]) or now
local elapsed = math.max(0, now - t) / 1000
local scale = math.min(1, (tonumber(f[5]) or 1) + elapsed / recovery)
local pause = tonumber(f[6]) or 0
local limit, rate, cap, level = {}, {}, {}, {}
for d = 1, 3 do
  limit[d] = tonumber(ARGV[d])
  local told = tonumber(f[6 + d])
  if told and told < limit[d] then limit[d] = told end
  rate[d] = limit[d] * scale / 60
  cap[d] = math.max(limit[d] * burst / 60, 1)
  level[d] = math.min(cap[d], (tonumber(f[d]) or cap[d]) + rate[d] * elapsed)
end
local function save(ttl)
  redis.call('HSET', KEYS[1], 'r', level[1], 'i', level[2], 'o', level[3], 't', now,
    's', scale, 'p', pause)
  redis.call('EXPIRE', KEYS[1], ttl)
end
local function state(wait)
  local out = {tostring(wait)}
  for d = 1, 3 do out[d + 1] = tostring(1 - math.max(level[d], 0) / cap[d]) end
  return out
end
"""

# KEYS[1]: the bucket; KEYS[2]: the marker of waiting interactive calls.
# ARGV[6], ARGV[7]: input and output tokens asked for; ARGV[8]: '1' for a batch call;
# ARGV[9]: the bucket's TTL (s); ARGV[10]: the marker's TTL (ms).
# Returns the milliseconds to wait (0: granted) and each bucket's share in use.
_ACQUIRE = (
    _REFILL
    + """
local need = {1, math.min(tonumber(ARGV[6]), cap[2]), math.min(tonumber(ARGV[7]), cap[3])}
local wait = math.max(0, pause - now)
local batch = ARGV[8] == '1'
if batch and redis.call('EXISTS', KEYS[2]) == 1 then wait = math.max(wait, 100) end
for d = 1, 3 do
  if level[d] < need[d] then
    local w = 60000
    if rate[d] > 0 then w = (need[d] - level[d]) / rate[d] * 1000 end
    wait = math.max(wait, w)
  end
end
if wait <= 0 then
  for d = 1, 3 do level[d] = level[d] - need[d] end
  wait = 0
elseif not batch then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[10])
end
save(ARGV[9])
return state(math.ceil(wait))
"""
)

# KEYS[1]: the bucket. ARGV[6], ARGV[7]: input and output tokens given back (negative: taken);
# ARGV[8..10]: the provider's remaining per limit (-1: not said); ARGV[11..13]: its limits
# (-1: not said); ARGV[14]: pause (ms) after a 429, 0 for none; ARGV[15]: seconds since the
# acquire; ARGV[16]: the bucket's TTL (s).
_SETTLE = (
    _REFILL
    + """
level[2] = math.min(cap[2], level[2] + tonumber(ARGV[6]))
level[3] = math.min(cap[3], level[3] + tonumber(ARGV[7]))
local since = tonumber(ARGV[15])
for d = 1, 3 do
  local remaining = tonumber(ARGV[7 + d])
  -- What the provider had left when it answered, refilled since: the caller's estimate
  -- cannot see other clients of the account, or a limit lower than configured.
  if remaining >= 0 then level[d] = math.min(level[d], remaining + rate[d] * since) end
  local told = tonumber(ARGV[10 + d])
  local field = ({'lr', 'li', 'lo'})[d]
  if told > 0 and told < tonumber(ARGV[d]) then
    redis.call('HSET', KEYS[1], field, told)
  elseif told > 0 then
    redis.call('HDEL', KEYS[1], field)
  end
end
local pause_ms = tonumber(ARGV[14])
if pause_ms > 0 then
  -- One decrease per pause: the many calls in flight that a 429 answers together are one signal.
  if pause <= now then scale = math.max(0.1, scale / 2) end
  pause = math.max(pause, now + pause_ms)
  for d = 1, 3 do level[d] = math.min(level[d], 0) end
end
save(ARGV[16])
return state(0)
"""
)


def estimate_input_tokens(request: LLMRequest) -> int:
    """The input tokens `request` will likely count: its system prompt, messages and tool
    definitions, cached prefixes included (the estimate errs high; the usage corrects it)."""
    total = estimate_tokens(request.system)
    for message in request.messages:
        for block in message.blocks():
            if isinstance(block, TextBlock):
                total += estimate_tokens(block.text)
            elif isinstance(block, ToolUseBlock):
                total += estimate_tokens(block.name + json.dumps(block.input))
            else:
                total += estimate_tokens(block.content)
    for tool in request.tools:
        total += estimate_tokens(json.dumps(tool.model_dump()))
    return total


@dataclass(frozen=True, slots=True)
class Grant:
    """Capacity one call took: the tokens it reserved, when, for which model."""

    model: str
    input_tokens: int
    output_tokens: int
    acquired: float  # time.monotonic()
    limited: bool = True  # False when Redis was unreachable and nothing was taken


Sleep = Callable[[float], Coroutine[Any, Any, None]]


class RateLimiter:
    """The account's shared buckets, one set per model, in Redis under `prefix`."""

    def __init__(
        self,
        redis: RedisClient,
        settings: LLMSettings,
        prefix: str = "podcrew",
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._base = f"{prefix}:ratelimit:{settings.ratelimit_account}"
        self._acquire = redis.register_script(_ACQUIRE)
        self._settle = redis.register_script(_SETTLE)
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        # Long enough to outlive a full refill and a recovery, so an idle bucket is
        # forgotten only when it would read as full anyway.
        self._ttl_s = int(settings.ratelimit_burst_s + settings.ratelimit_recovery_s) + 60

    def _keys(self, model: str) -> list[str]:
        # One hash tag for both: the acquiring script reads the marker beside the bucket,
        # and in a Redis Cluster a script touches keys of one hash slot only.
        bucket = f"{self._base}:{{{model}}}"
        return [bucket, f"{bucket}:interactive"]

    def _args(self, model: str) -> list[Any]:
        limit = self.settings.ratelimit_for(model)
        return [
            limit.requests_per_minute,
            limit.input_tokens_per_minute,
            limit.output_tokens_per_minute,
            self.settings.ratelimit_burst_s,
            self.settings.ratelimit_recovery_s,
        ]

    def _report(self, model: str, state: list[Any]) -> float:
        """Record the buckets' use; the seconds to wait the script answered."""
        for name, in_use in zip(LIMITS, state[1:], strict=True):
            LLM_RATELIMIT_IN_USE.labels(model, name).set(min(1.0, float(in_use)))
        return float(state[0]) / 1000

    async def acquire(self, request: LLMRequest) -> Grant:
        """Take one request, the estimated input and `max_tokens` of output for `request`,
        waiting for them within the current hop's deadline (`DeadlineExceeded` if they come
        too late: the call is then not made)."""
        hop = current_hop()
        priority = hop.priority if hop is not None else "interactive"
        model, needed = request.model, estimate_input_tokens(request)
        args = [*self._args(model), needed, request.max_tokens, int(priority == "batch")]
        args += [self._ttl_s, _MARKER_TTL_MS]
        started = time.monotonic()
        while True:
            try:
                wait_s = self._report(model, await self._acquire(self._keys(model), args))
            except RedisError as exc:
                LLM_RATELIMIT_THROTTLED.labels(model, "unavailable").inc()
                log.warning("ratelimit_unavailable", model=model, error=exc.__class__.__name__)
                return Grant(model, needed, request.max_tokens, time.monotonic(), limited=False)
            if wait_s <= 0:
                waited = time.monotonic() - started
                LLM_RATELIMIT_WAIT.labels(model, priority).observe(waited)
                if waited > 0.01:
                    LLM_RATELIMIT_THROTTLED.labels(model, "waited").inc()
                return Grant(model, needed, request.max_tokens, time.monotonic())
            elapsed = time.monotonic() - started
            left = hop.deadline.remaining() if hop is not None else NO_HOP_MAX_WAIT_S - elapsed
            if wait_s + MIN_REMAINING_S > left:
                LLM_RATELIMIT_THROTTLED.labels(model, "deadline").inc()
                LLM_RATELIMIT_WAIT.labels(model, priority).observe(time.monotonic() - started)
                raise DeadlineExceeded(
                    f"no capacity under the provider's rate limit for {model} before the "
                    f"deadline: {wait_s:.1f}s more needed, {max(0.0, left):.1f}s left"
                )
            # Jitter, so the callers a refill wakes do not all ask in the same instant.
            await self._sleep(min(wait_s, MAX_POLL_S) * (1 + 0.2 * self._rng.random()))

    async def settle(
        self,
        grant: Grant,
        response: LLMResponse | None = None,
        error: LLMError | None = None,
    ) -> None:
        """Correct what `grant` took with what the call used (`response`), or with what a
        failed call tells (`error`: a 429 pauses everyone; any failure gives the reserved
        output back)."""
        if not grant.limited:
            return
        give_input, give_output = 0, grant.output_tokens
        told: ProviderLimits | None = None
        pause_ms = 0
        if response is not None:
            usage = response.usage
            give_input = grant.input_tokens - (
                usage.input_tokens + usage.cache_creation_input_tokens
            )
            give_output = grant.output_tokens - usage.output_tokens
            told = response.provider_limits
        elif isinstance(error, LLMRateLimited):
            LLM_RATELIMIT_THROTTLED.labels(grant.model, "provider").inc()
            pause_ms = int(1000 * (error.retry_after_s or DEFAULT_PAUSE_S))
        bounds = told.bounds if told is not None else ()
        remaining = [b.remaining if b.remaining is not None else -1 for b in bounds] or [-1] * 3
        limits = [b.limit if b.limit is not None else -1 for b in bounds] or [-1] * 3
        args = [*self._args(grant.model), give_input, give_output, *remaining, *limits]
        args += [pause_ms, round(time.monotonic() - grant.acquired, 3), self._ttl_s]
        try:
            self._report(grant.model, await self._settle(self._keys(grant.model)[:1], args))
        except RedisError as exc:
            log.warning("ratelimit_unavailable", model=grant.model, error=exc.__class__.__name__)


class RateLimitedProvider:
    """Acquires each call's capacity from the shared limiter before the call and settles it
    after. Sits inside the retries, so every attempt acquires again.

    `batches_apart`: `inner` sends batch runs' calls through the Message Batches API, whose
    limits are the API's own (queued requests, not requests or tokens per minute), so those
    calls take none of this limiter's capacity."""

    def __init__(
        self, inner: LLMProvider, limiter: RateLimiter, *, batches_apart: bool = False
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.limiter = limiter
        self.batches_apart = batches_apart

    def _unlimited(self) -> bool:
        return self.batches_apart and current_priority() == "batch"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._unlimited():
            return await self.inner.complete(request)
        grant = await self.limiter.acquire(request)
        try:
            response = await self.inner.complete(request)
        except LLMError as error:
            await self.limiter.settle(grant, error=error)
            raise
        await self.limiter.settle(grant, response)
        return response

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        # A stream its consumer leaves early keeps its output reservation: it refills with the
        # bucket, and guessing what the provider counted could only err the unsafe way.
        if self._unlimited():
            async for event in self.inner.stream(request):
                yield event
            return
        grant = await self.limiter.acquire(request)
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, StreamEnd):
                    await self.limiter.settle(grant, event.response)
                yield event
        except LLMError as error:
            await self.limiter.settle(grant, error=error)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()
