"""Client cancellation of runs executing in this worker.

`DELETE /v1/runs/{id}` only stores the run as `cancelled`; the worker running it learns of
it by reading statuses. The executor registers each run's pipeline task while it runs; the
queue consumer calls `poll` on a timer, and every watched run found cancelled has its
pipeline task cancelled (and with it the HTTP calls to the agents underneath), with a flag
set first so the executor can tell a client's cancellation from a shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from redis.exceptions import RedisError

from podcrew_core.contracts.schemas import RunStatus
from podcrew_orchestrator.store import RunStore

log = structlog.get_logger(__name__)


class CancelWatch:
    """The pipeline tasks a client may cancel, each with its run id and the flag set when a
    client did."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._watched: dict[asyncio.Task[None], tuple[str, asyncio.Event]] = {}

    @contextmanager
    def watching(self, run_id: str, work: asyncio.Task[None]) -> Iterator[asyncio.Event]:
        """Watch `work` (run `run_id`'s pipeline) while the block runs; the event yielded is
        set when a client cancelled the run, just before `work` is cancelled."""
        cancelled_by_client = asyncio.Event()
        self._watched[work] = (run_id, cancelled_by_client)
        try:
            yield cancelled_by_client
        finally:
            self._watched.pop(work, None)

    async def poll(self) -> None:
        """Cancel the pipeline of every watched run a client cancelled. One pipelined read of
        all their statuses per call: a poll per run cost each run a status read twice a
        second, for as long as it ran."""
        if not self._watched:
            return
        watched = list(self._watched.items())
        try:
            statuses = await self.store.statuses([run_id for _, (run_id, _) in watched])
        except RedisError:  # Redis away for a moment: the next tick looks again
            log.debug("cancel_poll_failed", exc_info=True)
            return
        for (work, (_, cancelled_by_client)), status in zip(watched, statuses, strict=True):
            if status is RunStatus.CANCELLED and not work.done():
                cancelled_by_client.set()
                work.cancel()
