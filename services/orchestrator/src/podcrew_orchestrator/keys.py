"""Every Redis key the orchestrator reads or writes is named here, under one prefix
(`PODCREW_ORCHESTRATOR_KEY_PREFIX`); docs/architecture.md lists them with their types and
lifetimes. Scripts and pipelines get their keys from here, never build one themselves."""

from __future__ import annotations

import re
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


@dataclass(frozen=True, slots=True)
class Keys:
    """The orchestrator's key names under `prefix`."""

    prefix: str

    @property
    def queue(self) -> str:
        return f"{self.prefix}:runs"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:runs:dead"

    @property
    def finished(self) -> str:
        """The ids of runs that have just become final, for the api's waiters."""
        return f"{self.prefix}:runs:finished"

    @property
    def group(self) -> str:
        return "workers"

    @property
    def webhooks(self) -> str:
        """The webhook outbox: one entry per final run that names a callback URL."""
        return f"{self.prefix}:webhooks"

    @property
    def webhooks_group(self) -> str:
        return "webhooks"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def events(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:events"

    def feedback(self, run_id: str) -> str:
        """Users' feedback on the run: a hash, user → feedback JSON, with the run's TTL."""
        return f"{self.prefix}:run:{run_id}:feedback"

    def evaluation(self, run_id: str) -> str:
        """The run's latest evaluation (JSON), with the run's TTL."""
        return f"{self.prefix}:run:{run_id}:evaluation"

    def hub_wake(self, reader: str) -> str:
        return f"{self.prefix}:hub:{reader}:wake"

    def rate(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:rate"

    def active(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:active"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:idem:{key}"

    def coalesce(self, tenant: str, digest: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:inflight:{digest}"

    def result_cache(self, digest: str) -> str:
        return f"{self.prefix}:cache:result:{digest}"

    def semantic_cache(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:semcache"

    def thread(self, tenant: str, thread_id: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:thread:{thread_id}"
