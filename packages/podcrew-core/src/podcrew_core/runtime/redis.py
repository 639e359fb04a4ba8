"""The asyncio Redis client, created once per process in the lifespan: one endpoint, the
primary a group of sentinels names, or a Redis Cluster (`PODCREW_REDIS_MODE`).

Every command is timed and its failures counted, labelled by command name (a bounded set:
Redis' own command names, never keys or arguments). A pipeline counts as one `PIPELINE`
command and a transaction as one `MULTI`, which is what they cost on the wire.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster, TransactionStrategy
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podcrew_core.runtime.metrics import REDIS_COMMAND_DURATION, REDIS_COMMAND_ERRORS, Children
from podcrew_core.runtime.settings import RedisSettings

T = TypeVar("T")
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


RedisClient: TypeAlias = "Redis | RedisCluster"
"""What every part that keeps state in Redis is given: either client has the same commands."""
AnyPipeline: TypeAlias = "Pipeline | ClusterPipeline"


class ReplicationTimeout(RedisError):
    """A write reached fewer replicas than `PODCREW_REDIS_MIN_REPLICAS` within the timeout."""


# Errors that mean "Redis is changing hands, try again in a moment": the primary is gone or
# being replaced (connection errors, a demoted primary refusing writes, a cluster slot
# without its primary for now, a failover's TRYAGAIN), or a write that did not reach its
# replicas in time. The api answers them 503 with Retry-After.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    ReplicationTimeout,
)


@dataclass(frozen=True, slots=True)
class Replication:
    """`WAIT <replicas> <timeout_ms>` after a durable write, on the connection that wrote."""

    replicas: int
    timeout_ms: int

    async def wait(self, connection: Connection) -> None:
        # WAIT counts the replicas that have the writes of the connection it is sent on, so
        # it must follow the EXEC on that same connection: redis-py's pipelines release
        # theirs at the end of `execute`, hence this step inside it (see the two pipelines).
        started = time.perf_counter()
        await connection.send_command("WAIT", self.replicas, self.timeout_ms)
        acknowledged = int(await connection.read_response())
        _observe("WAIT", started, None)
        if acknowledged < self.replicas:
            error = ReplicationTimeout(
                f"the write reached {acknowledged} of {self.replicas} replicas in "
                f"{self.timeout_ms} ms"
            )
            REDIS_COMMAND_ERRORS.labels("WAIT", "ReplicationTimeout").inc()
            raise error


# redis-py's asyncio connections (8.1) can fail a command whose connection a failover is
# tearing down with these instead of a ConnectionError: a writer already gone, a transport
# already closed (seen in a cluster; a Sentinel failover tears connections down alike).
# They mean the same to a caller (Redis away for a moment, try again), so they are raised as
# one; any other AttributeError or RuntimeError is a bug and stays itself.
_TORN_CONNECTION = (
    (AttributeError, "object has no attribute 'write"),
    (RuntimeError, "the handler is closed"),
)


def _torn_connection(exc: Exception) -> RedisConnectionError | None:
    for kind, words in _TORN_CONNECTION:
        if isinstance(exc, kind) and words in str(exc):
            return RedisConnectionError(f"connection lost mid-command: {exc}")
    return None


async def _counted(command: str | None, call: Awaitable[T]) -> T:
    """Await a command or pipeline, timed and counted under `command` (None: not counted),
    a torn connection raised as the ConnectionError it is."""
    started = time.perf_counter()
    try:
        result = await call
    except Exception as exc:
        torn = _torn_connection(exc)
        if command is not None:
            _observe(command, started, torn or exc)
        if torn is not None:
            raise torn from exc
        raise
    if command is not None:
        _observe(command, started, None)
    return result


class InstrumentedPipeline(Pipeline):
    replication: Replication | None = None  # set by `durable_transaction`

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.command_stack and not self.watching:
            return []
        command = "MULTI" if self.is_transaction or self.explicit_transaction else "PIPELINE"
        return await _counted(command, super().execute(raise_on_error))

    async def _execute_transaction(
        self, connection: Connection, commands: Any, raise_on_error: bool
    ) -> list[Any]:
        result: list[Any] = await super()._execute_transaction(connection, commands, raise_on_error)
        if self.replication is not None:
            await self.replication.wait(connection)
        return result


class _ReplicatedTransaction(TransactionStrategy):
    """A cluster transaction followed by WAIT on the connection that ran it."""

    def __init__(self, pipe: ClusterPipeline, replication: Replication) -> None:
        super().__init__(pipe)
        self.replication = replication

    async def _execute_transaction(self, stack: Any, raise_on_error: bool) -> Any:
        result = await super()._execute_transaction(stack, raise_on_error)
        assert self._transaction_connection is not None
        await self.replication.wait(self._transaction_connection)
        return result


class InstrumentedRedis(Redis):
    """`redis.asyncio.Redis` with a latency histogram and an error counter per command."""

    replication: Replication | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = command_label(args[0]) if args else OTHER_COMMAND
        return await _counted(command, super().execute_command(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return InstrumentedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class InstrumentedClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        # Its commands are counted by redis-py's node calls, not as one PIPELINE.
        return await _counted(None, super().execute(raise_on_error, allow_redirections))


class InstrumentedCluster(RedisCluster):
    """`redis.asyncio.RedisCluster` with the same per-command metrics (a pipeline's commands
    are counted by redis-py's own node calls, not as one PIPELINE)."""

    replication: Replication | None = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        command = command_label(args[0]) if args else OTHER_COMMAND
        return await _counted(command, super().execute_command(*args, **kwargs))

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("a cluster pipeline takes no shard hint")
        return InstrumentedClusterPipeline(self, transaction)  # type: ignore[abstract]


def is_cluster(redis: RedisClient) -> bool:
    """Whether `redis` is a Redis Cluster client: then a command or script may touch keys of
    one hash slot only."""
    return isinstance(redis, RedisCluster)


def replication_of(redis: RedisClient) -> Replication | None:
    """The replicas a durable write must reach (`PODCREW_REDIS_MIN_REPLICAS`); None: none."""
    replication: Replication | None = getattr(redis, "replication", None)
    return replication


def durable_transaction(redis: RedisClient) -> AnyPipeline:
    """A MULTI/EXEC pipeline whose writes must survive a failover: when the client requires
    replicas (`PODCREW_REDIS_MIN_REPLICAS`), `execute` returns only after that many hold
    them, and raises `ReplicationTimeout` otherwise. In a cluster, its keys share one hash slot."""
    replication = replication_of(redis)
    if isinstance(redis, RedisCluster):
        cluster_pipe = redis.pipeline(transaction=True)
        if replication is not None:
            cluster_pipe._execution_strategy = _ReplicatedTransaction(cluster_pipe, replication)
        return cluster_pipe
    pipe = redis.pipeline(transaction=True)
    if isinstance(pipe, InstrumentedPipeline):
        pipe.replication = replication
    return pipe


async def run_script(pipe: AnyPipeline, script: Any, keys: list[str], args: list[Any]) -> Any:
    """Queue a registered script on `pipe` by its SHA and execute; load it once if the
    server lacks it (a restarted or newly promoted primary starts with no scripts).
    Not redis-py's own script support: on a pipeline it asks SCRIPT EXISTS on every
    execute, a round trip more per call, and a cluster pipeline does not load scripts."""
    # By name: redis-py refuses `evalsha` on a cluster pipeline, not the command itself.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    try:
        return (await pipe.execute())[-1]
    except NoScriptError:
        await script.registered_client.script_load(script.script)
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return (await pipe.execute())[-1]


@contextlib.asynccontextmanager
async def dedicated(redis: RedisClient) -> AsyncIterator[RedisClient]:
    """A client for a long blocking read: one connection of its own for a single endpoint
    (returned to the pool after); a cluster client takes a connection per call anyway."""
    if isinstance(redis, RedisCluster):
        yield redis
        return
    async with redis.client() as connection:
        yield connection


# Connections per process, bounded: a command waits up to POOL_TIMEOUT_S for a free one
# instead of opening another. Nothing holds a connection for long (waiters and event
# streams share the api's EventHub readers; a worker's blocking read holds one), so 256
# serve hundreds of concurrent requests; 64 starved a saturated worker in `make bench`
# ("No connection available"). The unbounded pool it replaces opened one connection per
# concurrent caller (500 in the api at 500 concurrent runs).
MAX_CONNECTIONS = 256
POOL_TIMEOUT_S = 30.0


def _retry() -> Retry:
    # About 5 s of retries: long enough to ride out a Redis restart or a failover.
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=9)


def create_redis(settings: RedisSettings) -> RedisClient:
    """A pooled client that rides out a Redis restart or failover: commands retry with
    jittered backoff, and a Sentinel or Cluster client finds the new primary on its own.
    The URL's query string may size the pool (`?max_connections=128&timeout=5`)."""
    password = settings.password.get_secret_value() if settings.password else None
    replication = (
        Replication(settings.min_replicas, settings.wait_timeout_ms)
        if settings.min_replicas
        else None
    )
    if settings.mode == "cluster":
        cluster = InstrumentedCluster.from_url(
            settings.url.get_secret_value(),
            password=password,
            decode_responses=True,
            max_connections=MAX_CONNECTIONS,
            socket_connect_timeout=2.0,
            retry=_retry(),
        )
        cast(InstrumentedCluster, cluster).replication = replication
        return cluster
    if settings.mode == "sentinel":
        client = _sentinel_primary(settings, password)
    else:
        pool = BlockingConnectionPool.from_url(
            settings.url.get_secret_value(),
            password=password,
            decode_responses=True,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_S,
            health_check_interval=15,
            socket_connect_timeout=2.0,
            retry=_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        client = cast(InstrumentedRedis, InstrumentedRedis.from_pool(pool))
    client.replication = replication
    return client


def _sentinel_primary(settings: RedisSettings, password: str | None) -> InstrumentedRedis:
    """The primary the sentinels name, through redis-py's Sentinel support: a connection asks
    the sentinels where the primary is, and after a failover (a refused connection, or the
    old primary answering READONLY as a replica) the next one asks again."""
    url = urlsplit(settings.url.get_secret_value())
    db = int(url.path.strip("/") or 0)
    sentinel_password = (
        settings.sentinel_password.get_secret_value() if settings.sentinel_password else None
    )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs={"password": sentinel_password, "socket_connect_timeout": 2.0},
        socket_connect_timeout=2.0,
    )
    primary = sentinel.master_for(
        settings.sentinel_service,
        redis_class=InstrumentedRedis,
        db=db,
        username=url.username,
        password=password or url.password,
        decode_responses=True,
        max_connections=MAX_CONNECTIONS,
        health_check_interval=15,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
    )
    return cast(InstrumentedRedis, primary)


def redis_ready(redis: RedisClient) -> Callable[[], Awaitable[None]]:
    """A readiness check (`Readiness.checks`): Redis answers PING."""

    async def check() -> None:
        await redis.ping()

    return check
