"""The run queue: a Redis Stream read by the `workers` consumer group.

Semantics (what a worker may assume and what it must do):
- an entry stays pending until `ack`, which happens only after the run's result is stored;
- a live worker `heartbeat`s the entries it holds (XCLAIM ... JUSTID resets their idle time
  without counting a delivery), so only a dead worker's entries grow idle;
- `reclaim` (XAUTOCLAIM) takes over entries idle longer than `min_idle_s`, which bumps their
  delivery count; the caller dead-letters an entry delivered more than `max_deliveries` times;
- `trim` deletes only acknowledged entries: it trims by MINID below both the oldest pending
  entry and the group's last-delivered id, never by MAXLEN, which could drop pending work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from podcrew_core.runtime.redis import RedisClient
from podcrew_orchestrator.keys import Keys

# Fields of a queue entry that carry the submitter's trace context (W3C trace context).
TRACE_FIELDS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Delivery:
    entry_id: str
    run_id: str
    deliveries: int
    trace_context: Mapping[str, str] = field(default_factory=dict)
    stream: str = ""  # the partition's stream it was read from ("": the first)

    @property
    def key(self) -> str:
        """Unique among every partition's entries (entry ids repeat across streams)."""
        return f"{self.stream} {self.entry_id}"


def _trace_context(fields: Mapping[str, str]) -> dict[str, str]:
    return {k: fields[k] for k in TRACE_FIELDS if k in fields}


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


# With several partitions (Redis Cluster), one XREADGROUP cannot block on streams of other
# hash slots: a read sweeps the partitions without blocking, from a rotating start so each
# is served in turn, and when all are empty blocks on one of them, for a share of the block
# time; an entry in another partition waits at most that long.
MIN_PARTITION_BLOCK_MS = 50


class RunQueue:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        consumer: str,
        *,
        streams: list[str] | None = None,
        group: str | None = None,
    ) -> None:
        """The run queue of `keys`, every partition of it, or other streams with the same
        semantics (the webhook outbox) when `streams` and `group` name them."""
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.streams = streams or keys.queues
        self.group = group or keys.group
        self._next = 0  # the partition a read starts at

    def _stream(self, delivery: Delivery) -> str:
        """The stream `delivery` came from (the first partition's for one made elsewhere)."""
        return delivery.stream or self.streams[0]

    async def ensure_group(self) -> None:
        for stream in self.streams:
            await self._ensure_group(stream)

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer (delivered for the first time), at most `count`."""
        if len(self.streams) == 1:
            return await self._read(self.streams[0], count, block_ms)
        start, found = self._next, list[Delivery]()
        self._next = (self._next + 1) % len(self.streams)
        for i in range(len(self.streams)):
            stream = self.streams[(start + i) % len(self.streams)]
            found += await self._read(stream, count - len(found), None)
            if len(found) >= count:
                return found
        if found:
            return found
        share = max(MIN_PARTITION_BLOCK_MS, block_ms // len(self.streams))
        return await self._read(self.streams[start], count, share)

    async def _read(self, stream: str, count: int, block_ms: int | None) -> list[Delivery]:
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restart without persistence, or a FLUSHALL): recreate it.
            await self._ensure_group(stream)
            return []
        if not reply:
            return []
        _, entries = reply[0]
        return [
            Delivery(eid, f.get("run_id", ""), 1, _trace_context(f), stream)
            for eid, f in entries
            if f is not None
        ]

    async def reclaim(self, min_idle_s: float, count: int) -> list[Delivery]:
        """Take over entries whose worker stopped heartbeating, with their delivery counts."""
        found: list[Delivery] = []
        for stream in self.streams:
            if len(found) >= count:
                break
            found += await self._reclaim(stream, min_idle_s, count - len(found))
        return found

    async def _reclaim(self, stream: str, min_idle_s: float, count: int) -> list[Delivery]:
        try:
            reply: Any = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=int(min_idle_s * 1000),
                start_id="0-0",
                count=count,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(stream)
            return []
        entries = [(eid, f) for eid, f in reply[1] if f is not None]
        if not entries:
            return []
        counts = await self._delivery_counts([eid for eid, _ in entries], stream)
        return [
            Delivery(eid, f.get("run_id", ""), counts.get(eid, 1), _trace_context(f), stream)
            for eid, f in entries
        ]

    async def _delivery_counts(self, entry_ids: list[str], stream: str) -> dict[str, int]:
        lo, hi = min(entry_ids, key=_id_key), max(entry_ids, key=_id_key)
        pending: Any = await self.redis.xpending_range(
            stream,
            self.group,
            min=lo,
            max=hi,
            count=max(len(entry_ids), 100),
            consumername=self.consumer,
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        by_stream: dict[str, list[Any]] = {}
        for delivery in deliveries:
            by_stream.setdefault(self._stream(delivery), []).append(delivery.entry_id)
        for stream, entry_ids in by_stream.items():
            await self.redis.xclaim(stream, self.group, self.consumer, 0, entry_ids, justid=True)

    async def ack(self, delivery: Delivery) -> None:
        await self.redis.xack(self._stream(delivery), self.group, delivery.entry_id)

    async def requeue(self, delivery: Delivery) -> None:
        """Put a run back at the end of its queue and acknowledge its current entry."""
        stream = self._stream(delivery)
        async with self.redis.pipeline(transaction=True) as pipe:
            # The new entry keeps the run's trace context: its next attempt joins the trace.
            entry: dict[Any, Any] = {"run_id": delivery.run_id, **delivery.trace_context}
            pipe.xadd(stream, entry)
            pipe.xack(stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry to its partition's dead-letter stream (same hash slot) and
        acknowledge it, in one transaction."""
        stream = self._stream(delivery)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.dead_letter_of(self.streams.index(stream)),
                {
                    "run_id": delivery.run_id,
                    "entry_id": delivery.entry_id,
                    "deliveries": str(delivery.deliveries),
                    "reason": reason,
                },
            )
            pipe.xack(stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def trim(self) -> int:
        """Delete acknowledged entries; returns how many went."""
        return sum([await self._trim(stream) for stream in self.streams])

    async def _group(self, stream: str) -> dict[str, Any] | None:
        groups = await self.redis.xinfo_groups(stream)
        return next((g for g in groups if g["name"] == self.group), None)

    async def _trim(self, stream: str) -> int:
        group = await self._group(stream)
        if group is None:
            return 0
        # Entries after last-delivered-id have not been read yet: keep them.
        floor = _next_id(group["last-delivered-id"])
        summary = await self.redis.xpending(stream, self.group)
        if summary["pending"]:
            floor = min(floor, summary["min"], key=_id_key)
        return int(await self.redis.xtrim(stream, minid=floor, approximate=False))

    async def depth(self) -> tuple[int, int]:
        """(entries not yet delivered, entries delivered but not acknowledged), summed over
        the partitions."""
        lag = pending = 0
        for stream in self.streams:
            stream_lag, stream_pending = await self._depth(stream)
            lag, pending = lag + stream_lag, pending + stream_pending
        return lag, pending

    async def _depth(self, stream: str) -> tuple[int, int]:
        group = await self._group(stream)
        if group is None:
            return 0, 0
        lag = group.get("lag")
        if lag is None:  # Redis < 7 has no lag field: count the entries after last-delivered.
            undelivered: Any = await self.redis.xrange(
                stream, min=_next_id(group["last-delivered-id"]), max="+", count=10_000
            )
            lag = len(undelivered)
        return int(lag), int(group["pending"])

    async def oldest_ages(self) -> tuple[float, float]:
        """Seconds since the oldest undelivered and the oldest pending entry were enqueued
        (0 when there is none), from the millisecond part of their ids, on Redis' clock;
        the oldest of every partition."""
        ages = [await self._oldest_ages(stream) for stream in self.streams]
        return max(a for a, _ in ages), max(p for _, p in ages)

    async def _oldest_ages(self, stream: str) -> tuple[float, float]:
        group = await self._group(stream)
        if group is None:
            return 0.0, 0.0
        first: Any = await self.redis.xrange(
            stream, min=_next_id(group["last-delivered-id"]), max="+", count=1
        )
        summary = await self.redis.xpending(stream, self.group)
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000

        def age(entry_id: str | None) -> float:
            return max(0.0, (now_ms - _id_key(entry_id)[0]) / 1000) if entry_id else 0.0

        return age(first[0][0] if first else None), age(
            summary["min"] if summary["pending"] else None
        )


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)
