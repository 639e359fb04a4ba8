"""Run records and run events in Redis.

A run is a hash (`status`, `data` = the Run as JSON) with a TTL; its events are a stream of
their own, so a client that reconnects with `Last-Event-ID` resumes exactly where it left
off. Every status change goes through one Lua script that refuses to touch a run already
in a final state and appends the matching event in the same step: a run can never have two
results, and a final state is never missing its final event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from podcrew_core.contracts.schemas import EventType, ResolvedBudget, Run, RunResult, RunStatus
from podcrew_core.runtime.redis import (
    AnyPipeline,
    RedisClient,
    durable_transaction,
    is_cluster,
    replication_of,
    run_script,
)
from podcrew_core.runtime.tracing import inject_context
from podcrew_orchestrator.keys import Keys

# Why Lua: the check "is this run already final?" and the write must be one atomic step,
# across every worker and API replica; MULTI cannot branch on what it reads.
# A run that becomes final is also announced on the finished-runs stream, in the same step:
# the api's waiters (`POST /v1/runs?wait=`) read that one stream instead of each run's events.
# A final run that names a callback URL gets its entry in the webhook outbox in that same
# step too, so no crash between the two can lose (or double) its delivery.
# KEYS: run hash, run events, finished runs, webhook outbox (all of the run's partition, so
# one hash slot in a cluster), and on one Redis the tenant's active-run set; in a cluster
# that set is in the tenant's slot and the run leaves it just after (`release`).
# ARGV: status, run JSON, event type, event JSON, TTL s, max events, run id, max finished
# entries, "1" when the run names a callback URL.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
if current == 'succeeded' or current == 'failed' or current == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'type', ARGV[3], 'data', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[1] == 'succeeded' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
  if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[7]) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'run', ARGV[7])
  if ARGV[9] == '1' then
    redis.call('XADD', KEYS[4], '*', 'run_id', ARGV[7])
  end
end
return 1
"""

MAX_EVENTS_PER_RUN = 20_000
# The finished-runs stream is read as it grows, so it only needs a short past: a waiter reads
# its run's status once it is watching, and a finish trimmed away before that is seen there.
MAX_FINISHED = 10_000
THREAD_ANSWER_CHARS = 2_000  # what the planner needs of an earlier answer, not all of it


@dataclass(frozen=True, slots=True)
class RunEvent:
    id: str
    type: str
    data: str  # JSON

    @property
    def terminal(self) -> bool:
        return self.type in _TERMINAL_TYPES

    @classmethod
    def from_entries(cls, entries: Any) -> list[RunEvent]:
        """A run stream's entries, as XRANGE and XREAD return them, as events."""
        return [cls(id=eid, type=f["type"], data=f["data"]) for eid, f in entries]


_TERMINAL_TYPES = frozenset(t.value for t in EventType if t.terminal)


def event_payload(run_id: str, data: dict[str, Any] | None = None) -> str:
    return orjson.dumps({"run_id": run_id, "ts": time.time(), **(data or {})}).decode()


def _with_budget_in_force(data: str, caps: ResolvedBudget) -> dict[str, Any]:
    """A run record stored before budgets were resolved at acceptance, made current: a limit
    it holds as null (or a budget it lacks) takes the server's cap, the value the worker
    then applied when it executed the run; a limit it holds is kept as it is."""
    record: dict[str, Any] = orjson.loads(data)
    held = {k: v for k, v in (record.get("budget") or {}).items() if v is not None}
    record["budget"] = {**caps.model_dump(), **held}
    return record


class RunStore:
    """Run records and events of one key prefix. `budget_caps` (the server's run limits) lets
    a record stored by an earlier version, whose budget may hold nulls, load; without it such
    a record is refused like any malformed one."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        ttl_s: int,
        *,
        budget_caps: ResolvedBudget | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.budget_caps = budget_caps
        self._transition = redis.register_script(_TRANSITION)
        self._cluster = is_cluster(redis)
        # Whether a final write must reach replicas (WAIT) before it counts.
        self._durable = replication_of(redis) is not None

    async def create(self, run: Run) -> None:
        """Record the run, its first event and its queue entry in one transaction; with
        `PODCREW_REDIS_MIN_REPLICAS`, return only once the replicas hold them."""
        partition = self.keys.partition_of(run.id)
        async with durable_transaction(self.redis) as pipe:
            self._record(pipe, run, [(EventType.RUN_QUEUED, None)])
            # The submitter's trace context travels with the entry: the worker's spans join it.
            entry: dict[Any, Any] = {"run_id": run.id, **inject_context()}
            pipe.xadd(self.keys.queue_of(partition), entry)
            await pipe.execute()

    async def create_finished(
        self, run: Run, events: list[tuple[EventType, dict[str, Any]]]
    ) -> None:
        """Record a run that is final from the start (answered from the cache): no queue entry,
        and, when it names a callback URL, its webhook outbox entry in the same transaction."""
        partition = self.keys.partition_of(run.id)
        async with durable_transaction(self.redis) as pipe:
            self._record(pipe, run, [(EventType.RUN_QUEUED, None), *events])
            finished = self.keys.finished_of(partition)
            pipe.xadd(finished, {"run": run.id}, maxlen=MAX_FINISHED, approximate=True)
            if run.callback_url is not None:
                pipe.xadd(self.keys.webhooks_of(partition), {"run_id": run.id})
            await pipe.execute()

    def _record(
        self,
        pipe: AnyPipeline,
        run: Run,
        events: Sequence[tuple[EventType, dict[str, Any] | None]],
    ) -> None:
        """Queue on `pipe` the run's record and its first events, both with the run's TTL."""
        pipe.hset(
            self.keys.run(run.id), mapping={"status": run.status, "data": run.model_dump_json()}
        )
        pipe.expire(self.keys.run(run.id), self.ttl_s)
        self._append(pipe, run.id, events)

    def _append(
        self,
        pipe: AnyPipeline,
        run_id: str,
        events: Sequence[tuple[EventType, dict[str, Any] | None]],
    ) -> None:
        stream = self.keys.events(run_id)
        for event, data in events:
            fields: dict[Any, Any] = {"type": event.value, "data": event_payload(run_id, data)}
            pipe.xadd(stream, fields, maxlen=MAX_EVENTS_PER_RUN, approximate=True)
        pipe.expire(stream, self.ttl_s)

    async def get(self, run_id: str) -> Run | None:
        data = await self.get_json(run_id)
        if not data:
            return None
        try:
            return Run.model_validate_json(data)
        except ValidationError:
            # Only a record of an earlier version fails here: made current on this path
            # alone, so a current record is parsed once.
            if self.budget_caps is None:
                raise
            return Run.model_validate(_with_budget_in_force(data, self.budget_caps))

    async def get_json(self, run_id: str) -> str | None:
        """The run as stored, already the JSON `Run.model_dump_json` makes of it."""
        data = await self.redis.hget(self.keys.run(run_id), "data")
        return str(data) if data else None

    async def status(self, run_id: str) -> RunStatus | None:
        status = await self.redis.hget(self.keys.run(run_id), "status")
        return RunStatus(str(status)) if status else None

    async def statuses(self, run_ids: list[str]) -> list[RunStatus | None]:
        """The status of each run (None: no such run), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(self.keys.run(run_id), "status")
            replies = await pipe.execute()
        return [RunStatus(str(status)) if status else None for status in replies]

    async def transition(
        self, run: Run, event: EventType, data: dict[str, Any] | None = None
    ) -> bool:
        """Store `run` and append `event`, unless the stored run is already final. A final
        state is durable as a new run is: with `PODCREW_REDIS_MIN_REPLICAS`, this returns
        only once the replicas hold it (else raises, and the run's entry stays pending)."""
        partition = self.keys.partition_of(run.id)
        keys = [
            self.keys.run(run.id),
            self.keys.events(run.id),
            self.keys.finished_of(partition),
            self.keys.webhooks_of(partition),
        ]
        if not self._cluster:
            keys.append(self.keys.active(run.tenant))
        args = [
            run.status.value,
            run.model_dump_json(),
            event.value,
            event_payload(run.id, data),
            self.ttl_s,
            MAX_EVENTS_PER_RUN,
            run.id,
            MAX_FINISHED,
            "1" if run.callback_url is not None else "0",
        ]
        final = run.status.terminal
        if final and self._durable:
            async with durable_transaction(self.redis) as pipe:
                done = await run_script(pipe, self._transition, keys, args)
        else:
            done = await self._transition(keys=keys, args=args)
        if final and self._cluster:
            await self.release(run)
        return bool(done)

    async def replicated(self, run_id: str) -> None:
        """With `PODCREW_REDIS_MIN_REPLICAS`, return once the replicas hold the run as it is
        stored now (raise `ReplicationTimeout` if they do not in time): for a run written
        earlier, whose own write may have timed out waiting for them. WAIT counts the writes
        of its own connection, so it follows one in the run's hash slot that changes nothing
        a reader sees (the record's TTL, set to what every transition sets); replication
        keeps order, so the replicas that have it have the run too."""
        if self._durable:
            async with durable_transaction(self.redis) as pipe:
                pipe.expire(self.keys.run(run_id), self.ttl_s)
                await pipe.execute()

    async def release(self, run: Run) -> None:
        """Give up the final run's place among its tenant's concurrent runs: in a cluster a
        step of its own (the set is in the tenant's hash slot), repeated by a worker that
        finds the run final, so a crash between the two cannot hold the place for long."""
        await self.redis.zrem(self.keys.active(run.tenant), run.id)

    async def publish(
        self, run_id: str, event: EventType, data: dict[str, Any] | None = None
    ) -> str:
        """Append one event; its stream id."""
        return (await self.publish_many(run_id, [(event, data)]))[-1]

    async def publish_many(
        self, run_id: str, events: Sequence[tuple[EventType, dict[str, Any] | None]]
    ) -> list[str]:
        """Append `events` in order, in one round trip; their stream ids."""
        if not events:
            return []
        # One transaction: the events go in together, in order, or not at all. A Lua step
        # did this before, to save redis-py's client CPU per command; `python -m
        # bench.luabench` measured it saving 38-54 us per publication of two events, about 7
        # publications per run: 1.2-1.9 % of a run's CPU, under the 2 % a deviation from
        # redis-py's normal API must save, so it is the normal pipeline again.
        async with self.redis.pipeline(transaction=True) as pipe:
            self._append(pipe, run_id, events)
            replies: list[Any] = await pipe.execute()
        return [str(entry_id) for entry_id in replies[:-1]]

    async def cache_result(self, digest: str, result: RunResult, ttl_s: int) -> None:
        await self.redis.set(self.keys.result_cache(digest), result.model_dump_json(), ex=ttl_s)

    async def thread_history(
        self, tenant: str, thread_id: str, turns: int
    ) -> list[tuple[str, str]]:
        raw: list[Any] = await self.redis.lrange(self.keys.thread(tenant, thread_id), -turns, -1)
        return [(t["q"], t["a"]) for t in map(orjson.loads, raw)]

    async def append_thread(
        self, tenant: str, thread_id: str, question: str, answer: str, turns: int, ttl_s: int
    ) -> None:
        """Add a turn; the thread keeps its last `turns` turns and lives `ttl_s` past the last."""
        key = self.keys.thread(tenant, thread_id)
        turn = orjson.dumps({"q": question, "a": answer[:THREAD_ANSWER_CHARS]}).decode()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, turn)
            pipe.ltrim(key, -turns, -1)
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def read_events(self, run_id: str, after: str, count: int = 200) -> list[RunEvent]:
        """Events after `after` ("0" for all), at most `count`, without waiting for any.
        (Waiting is `EventHub`'s: one reader per process for every waiter.)"""
        # redis-py types stream replies as a union of every shape; these are decoded strings.
        reply: Any = await self.redis.xread({self.keys.events(run_id): after}, count=count)
        if not reply:
            return []
        _, entries = reply[0]
        return RunEvent.from_entries(entries)

    async def last_event_id(self, run_id: str) -> str | None:
        """The id of the run's latest event; None when it has none (or no longer exists)."""
        reply: Any = await self.redis.xrevrange(self.keys.events(run_id), count=1)
        return str(reply[0][0]) if reply else None
