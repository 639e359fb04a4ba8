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

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from podcrew_orchestrator.keys import Keys

# Fields of a queue entry that carry the submitter's trace context (W3C trace context).
TRACE_FIELDS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Delivery:
    entry_id: str
    run_id: str
    deliveries: int
    trace_context: Mapping[str, str] = field(default_factory=dict)


def _trace_context(fields: Mapping[str, str]) -> dict[str, str]:
    return {k: fields[k] for k in TRACE_FIELDS if k in fields}


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


class RunQueue:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        consumer: str,
        *,
        stream: str | None = None,
        group: str | None = None,
    ) -> None:
        """The run queue of `keys`, or another stream with the same semantics (the webhook
        outbox) when `stream` and `group` name it."""
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.stream = stream or keys.queue
        self.group = group or keys.group

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New entries for this consumer (delivered for the first time)."""
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restart without persistence, or a FLUSHALL): recreate it.
            await self.ensure_group()
            return []
        if not reply:
            return []
        _, entries = reply[0]
        return [
            Delivery(eid, f.get("run_id", ""), 1, _trace_context(f))
            for eid, f in entries
            if f is not None
        ]

    async def reclaim(self, min_idle_s: float, count: int) -> list[Delivery]:
        """Take over entries whose worker stopped heartbeating, with their delivery counts."""
        try:
            reply: Any = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(min_idle_s * 1000),
                start_id="0-0",
                count=count,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        entries = [(eid, f) for eid, f in reply[1] if f is not None]
        if not entries:
            return []
        counts = await self.delivery_counts([eid for eid, _ in entries])
        return [
            Delivery(eid, f.get("run_id", ""), counts.get(eid, 1), _trace_context(f))
            for eid, f in entries
        ]

    async def delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        lo, hi = min(entry_ids, key=_id_key), max(entry_ids, key=_id_key)
        pending: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min=lo,
            max=hi,
            count=max(len(entry_ids), 100),
            consumername=self.consumer,
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    async def heartbeat(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.redis.xclaim(
                self.stream,
                self.group,
                self.consumer,
                0,
                list[Any](entry_ids),
                justid=True,
            )

    async def ack(self, entry_id: str) -> None:
        await self.redis.xack(self.stream, self.group, entry_id)

    async def requeue(self, delivery: Delivery) -> None:
        """Put a run back at the end of the queue and acknowledge its current entry."""
        async with self.redis.pipeline(transaction=True) as pipe:
            # The new entry keeps the run's trace context: its next attempt joins the trace.
            entry: dict[Any, Any] = {"run_id": delivery.run_id, **delivery.trace_context}
            pipe.xadd(self.stream, entry)
            pipe.xack(self.stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move an entry to the dead-letter stream and acknowledge it, in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.dead_letter,
                {
                    "run_id": delivery.run_id,
                    "entry_id": delivery.entry_id,
                    "deliveries": str(delivery.deliveries),
                    "reason": reason,
                },
            )
            pipe.xack(self.stream, self.group, delivery.entry_id)
            await pipe.execute()

    async def trim(self) -> int:
        """Delete acknowledged entries; returns how many went."""
        groups = await self.redis.xinfo_groups(self.stream)
        group = next((g for g in groups if g["name"] == self.group), None)
        if group is None:
            return 0
        # Entries after last-delivered-id have not been read yet: keep them.
        floor = _next_id(group["last-delivered-id"])
        summary = await self.redis.xpending(self.stream, self.group)
        if summary["pending"]:
            floor = min(floor, summary["min"], key=_id_key)
        return int(await self.redis.xtrim(self.stream, minid=floor, approximate=False))

    async def depth(self) -> tuple[int, int]:
        """(entries not yet delivered, entries delivered but not acknowledged)."""
        groups = await self.redis.xinfo_groups(self.stream)
        group = next((g for g in groups if g["name"] == self.group), None)
        if group is None:
            return 0, 0
        lag = group.get("lag")
        if lag is None:  # Redis < 7 has no lag field: count the entries after last-delivered.
            undelivered: Any = await self.redis.xrange(
                self.stream, min=_next_id(group["last-delivered-id"]), max="+", count=10_000
            )
            lag = len(undelivered)
        return int(lag), int(group["pending"])

    async def oldest_ages(self) -> tuple[float, float]:
        """Seconds since the oldest undelivered and the oldest pending entry were enqueued
        (0 when there is none), from the millisecond part of their ids, on Redis' clock."""
        groups = await self.redis.xinfo_groups(self.stream)
        group = next((g for g in groups if g["name"] == self.group), None)
        if group is None:
            return 0.0, 0.0
        first: Any = await self.redis.xrange(
            self.stream, min=_next_id(group["last-delivered-id"]), max="+", count=1
        )
        summary = await self.redis.xpending(self.stream, self.group)
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
