"""The asyncio Redis client, created once per process in the lifespan."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podcrew_core.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    """A pooled client that rides out a Redis restart: commands retry with jittered backoff."""
    return Redis.from_url(
        settings.url.get_secret_value(),
        decode_responses=True,
        health_check_interval=15,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
