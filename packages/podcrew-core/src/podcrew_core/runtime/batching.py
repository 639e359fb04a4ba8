"""A stream of text deltas passed on as fewer, larger pieces: at most one per interval.

A model streams a report as ~150 deltas. Passed on one by one, each costs an SSE event and a
parse at the next hop and, at the worker, a Redis write and a wake-up of every reader of the
run's events (docs/benchmarks.md). Batched per 50 ms they are ~10x fewer and still read as a
live stream. The writer agent (towards the worker) and the worker (towards the run's events)
both batch with `batch_deltas`, so the two hops pace the text alike.

The source is read by a task of its own: text that waits for the end of its interval goes out
then, even when the source has gone quiet (a model pausing mid-report), instead of waiting
for a next delta that may be seconds away.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Inbox(Generic[T]):
    """What the reading task has read and the batcher has not yet passed on."""

    def __init__(self) -> None:
        self.items: list[str | T] = []
        self.ended = False
        self.failure: Exception | None = None
        self.arrived = asyncio.Event()  # something to pass on, or the end
        self.urgent = asyncio.Event()  # something that must not wait: a result, or the end

    async def fill(self, source: AsyncIterable[str | T]) -> None:
        try:
            async for item in source:
                self.items.append(item)
                self.arrived.set()
                if not isinstance(item, str):
                    self.urgent.set()
        except Exception as exc:  # handed to the consumer, after the text read before it
            self.failure = exc
        finally:
            self.ended = True
            self.arrived.set()
            self.urgent.set()

    async def hold(self, seconds: float) -> None:
        """Wait up to `seconds` for more text, returning early at a result or the end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.urgent.wait()

    def take(self) -> list[str | T]:
        """Everything read so far, each run of text joined into one piece."""
        out: list[str | T] = []
        text: list[str] = []
        for item in self.items:
            if isinstance(item, str):
                text.append(item)
                continue
            if joined := "".join(text):
                out.append(joined)
            text = []
            out.append(item)
        if joined := "".join(text):
            out.append(joined)
        self.items = []
        if not self.ended:
            self.arrived.clear()
            self.urgent.clear()
        return out


async def batch_deltas(
    source: AsyncIterable[str | T], interval_s: float
) -> AsyncGenerator[str | T, None]:
    """The items of `source` in order, its text joined into pieces, at most one per
    `interval_s`.

    Text that comes `interval_s` or more after the last piece (the first delta, too) goes out
    at once; text that comes sooner waits for the interval to end and goes then, whether or
    not more comes. Anything that is not text (a final result) goes out as soon as it comes,
    after the text before it. When the source fails, the text read before the failure goes
    out first, then the failure is raised. Joined, the pieces are exactly the source's text.
    With `interval_s` 0 every item goes out as it comes, and no task is started.

    Close the generator (`contextlib.aclosing`) to stop early: the reading task is cancelled,
    which closes the source.
    """
    if interval_s <= 0:
        async for item in source:
            yield item
        return
    inbox: _Inbox[T] = _Inbox()
    reader = asyncio.create_task(inbox.fill(source))
    loop = asyncio.get_running_loop()
    sent_at = -math.inf
    try:
        while True:
            await inbox.arrived.wait()
            wait_s = sent_at + interval_s - loop.time()
            if wait_s > 0 and not inbox.urgent.is_set():
                await inbox.hold(wait_s)
            ended = inbox.ended  # read before `take`: then nothing can come after it
            for item in inbox.take():
                if isinstance(item, str):
                    sent_at = loop.time()
                yield item
            if ended:
                if inbox.failure is not None:
                    raise inbox.failure
                return
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
