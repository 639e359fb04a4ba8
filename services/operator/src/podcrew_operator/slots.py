"""The bound on AgentRuns in flight at the orchestrator at once.

What is in flight comes from the cluster (kopf's index of submitted, unfinished AgentRuns),
so a restarted operator counts the runs it did not submit itself; kopf fills indices before
any handler runs. The index lags a submission by one watch event, so this process also
remembers what it reserved until the run ends.
"""

from __future__ import annotations

from collections.abc import Collection


class Slots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._reserved: set[str] = set()

    def in_flight(self, known: Collection[str]) -> int:
        return len(set(known) | self._reserved)

    def try_take(self, uid: str, known: Collection[str]) -> bool:
        """Reserve a slot for `uid` if one is free (or it already holds one).

        No await happens between the check and the reservation, so asyncio needs no lock.
        """
        busy = set(known) | self._reserved
        if uid in busy:
            self._reserved.add(uid)
            return True
        if len(busy) >= self.capacity:
            return False
        self._reserved.add(uid)
        return True

    def hold(self, uid: str) -> None:
        """Count `uid` as in flight unconditionally: it was submitted before."""
        self._reserved.add(uid)

    def release(self, uid: str) -> None:
        self._reserved.discard(uid)
