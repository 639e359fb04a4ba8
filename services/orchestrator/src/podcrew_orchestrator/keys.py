"""Every Redis key the orchestrator reads or writes is named here, under one prefix
(`PODCREW_ORCHESTRATOR_KEY_PREFIX`); docs/architecture.md lists them with their types and
lifetimes. Scripts and pipelines get their keys from here, never build one themselves."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

# What `new_run_id` makes. A run id from a client becomes part of key names (`run:{id}`,
# `run:{id}:events`), so an id of any other shape is refused before it reaches Redis:
# `run_x:events` would otherwise name another run's event stream.
_RUN_ID = re.compile(r"run_[0-9a-f]{32}")


def new_run_id() -> str:
    """A fresh run id: `run_` and 32 lowercase hex digits (a random UUID)."""
    return f"run_{uuid.uuid4().hex}"


def is_run_id(value: str) -> bool:
    """Whether `value` has the shape `new_run_id` gives, and so may name a run's keys."""
    return _RUN_ID.fullmatch(value) is not None


MAX_PARTITIONS = 256  # a run id's first byte names its partition


@dataclass(frozen=True, slots=True)
class Keys:
    """The orchestrator's key names under `prefix`.

    On one Redis (standalone or Sentinel) the names are those podcrew has always used. In a
    Redis Cluster (`tagged`) a script or transaction may only touch keys of one hash slot,
    so every key carries a hash tag: a run's keys share its queue partition's slot (`{P:p3}`:
    its record, events, queue entry, finished and webhook announcements are written in one
    atomic step, as on one Redis), a tenant's keys share the tenant's (`{P:t:acme}`: its
    rate and concurrent-run limits are one step too). The run queue is `partitions` streams,
    so the runs spread over that many slots, and so over the cluster's shards."""

    prefix: str
    partitions: int = 1
    tagged: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"queue partitions must be 1 to {MAX_PARTITIONS}")
        if self.partitions > 1 and not self.tagged:
            raise ValueError(
                f"PODCREW_ORCHESTRATOR_QUEUE_PARTITIONS is {self.partitions}: more than one "
                "partition needs a Redis Cluster (PODCREW_REDIS_MODE=cluster); one Redis "
                "reads one stream"
            )

    def new_run_id(self) -> str:
        """A fresh run id in a partition drawn at random; its first byte names it."""
        run_id = new_run_id()
        if self.partitions == 1:
            return run_id
        return f"run_{secrets.randbelow(self.partitions):02x}{run_id[6:]}"

    def partition_of(self, run_id: str) -> int:
        """The queue partition `run_id` belongs to (0 when there is one)."""
        return int(run_id[4:6], 16) if self.partitions > 1 else 0

    def _part(self, partition: int) -> str:
        """The start of partition `partition`'s key names."""
        return f"{{{self.prefix}:p{partition}}}" if self.tagged else self.prefix

    def _tenant(self, tenant: str) -> str:
        return f"{{{self.prefix}:t:{tenant}}}" if self.tagged else f"{self.prefix}:tenant:{tenant}"

    @property
    def queue(self) -> str:
        return self.queue_of(0)

    def queue_of(self, partition: int) -> str:
        """Partition `partition`'s run queue stream."""
        return f"{self._part(partition)}:runs"

    @property
    def queues(self) -> list[str]:
        """Every partition's run queue stream, by partition."""
        return [self.queue_of(p) for p in range(self.partitions)]

    def dead_letter_of(self, partition: int) -> str:
        return f"{self._part(partition)}:runs:dead"

    @property
    def dead_letter(self) -> str:
        return self.dead_letter_of(0)

    def finished_of(self, partition: int) -> str:
        """The ids of runs of `partition` that have just become final, for the api's waiters."""
        return f"{self._part(partition)}:runs:finished"

    @property
    def finished(self) -> str:
        return self.finished_of(0)

    @property
    def group(self) -> str:
        return "workers"

    def webhooks_of(self, partition: int) -> str:
        """The webhook outbox of `partition`: one entry per final run naming a callback URL."""
        return f"{self._part(partition)}:webhooks"

    @property
    def webhooks(self) -> str:
        return self.webhooks_of(0)

    @property
    def webhooks_group(self) -> str:
        return "webhooks"

    def run(self, run_id: str) -> str:
        return f"{self._part(self.partition_of(run_id))}:run:{run_id}"

    def events(self, run_id: str) -> str:
        return f"{self.run(run_id)}:events"

    def feedback(self, run_id: str) -> str:
        """Users' feedback on the run: a hash, user → feedback JSON, with the run's TTL."""
        return f"{self.run(run_id)}:feedback"

    def evaluation(self, run_id: str) -> str:
        """The run's latest evaluation (JSON), with the run's TTL."""
        return f"{self.run(run_id)}:evaluation"

    def hub_wake(self, reader: str, partition: int = 0) -> str:
        return f"{self._part(partition)}:hub:{reader}:wake"

    def rate(self, tenant: str) -> str:
        return f"{self._tenant(tenant)}:rate"

    def active(self, tenant: str) -> str:
        return f"{self._tenant(tenant)}:active"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self._tenant(tenant)}:idem:{key}"

    def coalesce(self, tenant: str, digest: str) -> str:
        return f"{self._tenant(tenant)}:inflight:{digest}"

    def result_cache(self, digest: str) -> str:
        return f"{self.prefix}:cache:result:{digest}"

    def semantic_cache(self, tenant: str) -> str:
        return f"{self._tenant(tenant)}:semcache"

    def thread(self, tenant: str, thread_id: str) -> str:
        return f"{self._tenant(tenant)}:thread:{thread_id}"


def keys_for(prefix: str, partitions: int, *, cluster: bool) -> Keys:
    """The key names of an installation: tagged, and maybe partitioned, in a Redis Cluster."""
    return Keys(prefix, partitions, tagged=cluster)
