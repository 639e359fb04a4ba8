"""The asyncio Redis client, created once per process in the lifespan.

Every command is timed and its failures counted, labelled by command name (a bounded set:
Redis' own command names, never keys or arguments). A pipeline counts as one `PIPELINE`
command and a transaction as one `MULTI`, which is what they cost on the wire.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podcrew_core.runtime.metrics import REDIS_COMMAND_DURATION, REDIS_COMMAND_ERRORS, Children
from podcrew_core.runtime.settings import RedisSettings

_COMMAND = re.compile(r"[A-Z][A-Z_ ]{0,31}")
OTHER_COMMAND = "OTHER"
_DURATION = Children(REDIS_COMMAND_DURATION)  # one lookup per command: from a dict


def command_label(name: object) -> str:
    """`XINFO GROUPS`, `EVALSHA`, …; anything that is not a command name becomes OTHER."""
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
    text = text.upper()
    return text if _COMMAND.fullmatch(text) else OTHER_COMMAND


def _observe(command: str, started: float, error: BaseException | None) -> None:
    _DURATION(command).observe(time.perf_counter() - started)
    # NOSCRIPT is how EVALSHA asks for a script's first load (redis-py loads it and retries).
    if error is not None and not isinstance(error, NoScriptError):
        REDIS_COMMAND_ERRORS.labels(command, error.__class__.__name__).inc()


class InstrumentedPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.command_stack and not self.watching:
            return []
        command = "MULTI" if self.is_transaction or self.explicit_transaction else "PIPELINE"
        started = time.perf_counter()
        try:
            result = await super().execute(raise_on_error)
        except Exception as exc:
            _observe(command, started, exc)
            raise
        _observe(command, started, None)
        return result


class InstrumentedRedis(Redis):
    """`redis.asyncio.Redis` with a latency histogram and an error counter per command."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = command_label(args[0]) if args else OTHER_COMMAND
        started = time.perf_counter()
        try:
            result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except Exception as exc:
            _observe(command, started, exc)
            raise
        _observe(command, started, None)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return InstrumentedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


# Connections per process, bounded: a command waits up to POOL_TIMEOUT_S for a free one
# instead of opening another. Nothing holds a connection for long (waiters and event
# streams share the api's EventHub readers; a worker's blocking read holds one), so 256
# serve hundreds of concurrent requests; 64 starved a saturated worker in `make bench`
# ("No connection available"). The unbounded pool it replaces opened one connection per
# concurrent caller (500 in the api at 500 concurrent runs).
MAX_CONNECTIONS = 256
POOL_TIMEOUT_S = 30.0


def create_redis(settings: RedisSettings) -> Redis:
    """A pooled client that rides out a Redis restart: commands retry with jittered backoff.
    The URL's query string may size the pool (`?max_connections=128&timeout=5`)."""
    pool = BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        password=settings.password.get_secret_value() if settings.password else None,
        decode_responses=True,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT_S,
        health_check_interval=15,
        socket_connect_timeout=2.0,
        # About 5 s of retries: long enough to ride out a Redis restart or failover.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=9),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return InstrumentedRedis.from_pool(pool)


def redis_ready(redis: Redis) -> Callable[[], Awaitable[None]]:
    """A readiness check (`Readiness.checks`): Redis answers PING."""

    async def check() -> None:
        await redis.ping()

    return check
