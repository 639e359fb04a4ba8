"""Fixtures of podcrew-core's tests: a real redis-server on a free loopback port."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from podcrew_cli.stack import LOOPBACK, free_port, redis_server_argv
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import RedisSettings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    argv = redis_server_argv(port, tmp_path_factory.mktemp("redis"), "--appendonly", "no")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    url = f"redis://{LOOPBACK}:{port}/0"
    deadline = time.monotonic() + 10
    import redis as sync_redis

    with sync_redis.Redis.from_url(url) as probe:
        while True:
            try:
                probe.ping()
                break
            except sync_redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(RedisSettings(url=SecretStr(redis_url)))
    await client.flushdb()
    yield client
    await client.aclose()
