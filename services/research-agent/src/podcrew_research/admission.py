"""Admission control: at most `max_concurrency` research calls run at once; the others
wait for a slot, visibly (the queue depth gauge), and no longer than their deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from podcrew_core.deadline import Deadline
from podcrew_core.errors import Overloaded
from podcrew_research.metrics import RESEARCH_IN_PROGRESS, RESEARCH_QUEUE_DEPTH


class Slots:
    """A counted set of slots; `hold()` waits for one within the caller's deadline."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def hold(self, deadline: Deadline) -> AsyncIterator[None]:
        """Hold a slot for the block; `Overloaded` (503) if none frees up in time."""
        if self._semaphore.locked():
            RESEARCH_QUEUE_DEPTH.inc()
            try:
                async with asyncio.timeout(deadline.remaining()):
                    await self._semaphore.acquire()
            except TimeoutError as exc:
                raise Overloaded(
                    f"all {self.limit} research slots stayed busy until the deadline"
                ) from exc
            finally:
                RESEARCH_QUEUE_DEPTH.dec()
        else:
            # Free slot: acquiring cannot suspend, so skip the timer on the hot path.
            await self._semaphore.acquire()
        RESEARCH_IN_PROGRESS.inc()
        try:
            yield
        finally:
            RESEARCH_IN_PROGRESS.dec()
            self._semaphore.release()
