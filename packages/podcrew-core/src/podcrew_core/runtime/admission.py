"""Admission control: every service bounds the work it takes on.

At most `limit` requests run at once; at most `max_queue` more wait for a slot, each no
longer than `max_wait_s` or its own deadline. Anything beyond is refused at once with 503
and `Retry-After` — a full service sheds load instead of queueing without bound until it
runs out of memory. The in-flight and queue-depth gauges are the autoscaling signals.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import Overloaded
from podcrew_core.runtime.settings import ServiceSettings

IN_FLIGHT = Gauge(
    "podcrew_admission_in_flight",
    "Requests holding a work slot, by service.",
    ["service"],
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "podcrew_admission_queue_depth",
    "Requests waiting for a work slot, by service.",
    ["service"],
    multiprocess_mode="livesum",
)
REJECTED = Counter(
    "podcrew_admission_rejected",
    "Requests refused by admission control, by service and reason (queue_full, wait_timeout).",
    ["service", "reason"],
)


class Admission:
    def __init__(
        self,
        service: str,
        limit: int,
        max_queue: int,
        max_wait_s: float,
        retry_after_s: float = 1.0,
    ) -> None:
        self.service = service
        self.limit = limit
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self._semaphore = asyncio.Semaphore(limit)
        self._waiting = 0
        self._in_flight = IN_FLIGHT.labels(service)
        self._depth = QUEUE_DEPTH.labels(service)
        self._in_flight.set(0)
        self._depth.set(0)
        for reason in ("queue_full", "wait_timeout"):  # exported at 0, so rates are never empty
            REJECTED.labels(service, reason)

    @classmethod
    def from_settings(cls, service: str, settings: ServiceSettings) -> Admission:
        """The admission control a service's settings ask for, under its metrics label."""
        return cls(service, settings.max_concurrency, settings.max_queue, settings.max_queue_wait_s)

    @property
    def waiting(self) -> int:
        return self._waiting

    def _refuse(self, reason: str, detail: str) -> Overloaded:
        REJECTED.labels(self.service, reason).inc()
        return Overloaded(
            detail, headers={"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}
        )

    def check_capacity(self) -> None:
        """Refuse now if a new request could not even queue (for streams answered later)."""
        if self._semaphore.locked() and self._waiting >= self.max_queue:
            raise self._refuse(
                "queue_full",
                f"{self.service} is at capacity ({self.limit} running, {self._waiting} waiting)",
            )

    @asynccontextmanager
    async def hold(self, deadline: Deadline | None = None) -> AsyncIterator[None]:
        """Hold a slot for the block, or raise `Overloaded` (503 with Retry-After)."""
        if self._semaphore.locked():
            if self._waiting >= self.max_queue:
                raise self._refuse(
                    "queue_full",
                    f"{self.service} is at capacity ({self.limit} running, "
                    f"{self._waiting} waiting)",
                )
            wait_s = self.max_wait_s
            if deadline is not None:
                wait_s = min(wait_s, max(0.0, deadline.remaining()))
            self._waiting += 1
            self._depth.inc()
            try:
                async with asyncio.timeout(wait_s):
                    await self._semaphore.acquire()
            except TimeoutError as exc:
                raise self._refuse(
                    "wait_timeout", f"no {self.service} slot freed up within {wait_s:.2f}s"
                ) from exc
            finally:
                self._waiting -= 1
                self._depth.dec()
        else:
            # A free slot: acquiring cannot suspend, so the hot path skips the timer.
            await self._semaphore.acquire()
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()
            self._semaphore.release()
