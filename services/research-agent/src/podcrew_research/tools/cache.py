"""A Redis cache in front of a tool: the same tool with the same input within the TTL is
answered from the cache. Best effort: a cache that cannot be reached is a miss, never an
error, so a Redis outage slows research down but does not fail it."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from podcrew_core.contracts.schemas import Source
from podcrew_core.runtime.metrics import CACHE_REQUESTS, Children
from podcrew_core.runtime.redis import RedisClient
from podcrew_research.tools import Tool, ToolOutput

log = structlog.get_logger(__name__)

# The cache is an optimisation: never wait on it longer than this.
CACHE_TIMEOUT_S = 0.25
_REQUESTS = Children(CACHE_REQUESTS)  # a lookup per tool call: from a dict


def cache_key(prefix: str, tool: str, arguments: dict[str, Any]) -> str:
    """The key of a tool's result for these arguments: the research agent's only Redis keys
    (besides the spend ledger's, `podcrew_core.runtime.ledger`) are built here."""
    canonical = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    return f"{prefix}:cache:tool:{tool}:{hashlib.sha256(canonical).hexdigest()}"


def cached(tool: Tool, redis: RedisClient, ttl_s: int, prefix: str) -> Tool:
    """`tool`, answered from Redis when it ran with the same input in the last `ttl_s`, under
    the installation's key `prefix`."""
    if ttl_s <= 0:
        return tool

    async def run(arguments: dict[str, Any]) -> ToolOutput:
        key = cache_key(prefix, tool.name, arguments)
        try:
            async with asyncio.timeout(CACHE_TIMEOUT_S):
                raw = await redis.get(key)
        except (RedisError, TimeoutError):
            log.warning("tool_cache_unavailable", tool=tool.name)
            raw = None
        if raw:
            _REQUESTS(tool.name, "hit").inc()
            data = orjson.loads(raw)
            return ToolOutput(
                content=data["content"],
                sources=[Source.model_validate(s) for s in data["sources"]],
                cached=True,
            )
        _REQUESTS(tool.name, "miss").inc()
        output = await tool.run(arguments)
        record = {"content": output.content, "sources": [s.model_dump() for s in output.sources]}
        try:
            async with asyncio.timeout(CACHE_TIMEOUT_S):
                await redis.set(key, orjson.dumps(record), ex=ttl_s)
        except (RedisError, TimeoutError):
            log.warning("tool_cache_unavailable", tool=tool.name)
        return output

    return dataclasses.replace(tool, run=run)
