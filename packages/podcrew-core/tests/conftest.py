"""Fixtures of podcrew-core's tests: a real redis-server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from podcrew_cli.stack import redis_server
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis"), "--appendonly", "no") as url:
        yield url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(RedisSettings(url=SecretStr(redis_url)))
    await client.flushdb()
    yield client
    await client.aclose()
