"""Stop work nobody waits for: when the caller of an internal endpoint goes away (it was
cancelled, or its own deadline passed), the work it asked for is cancelled too, and with it
every LLM call and tool call underneath — instead of running to the end for no one.

Why hand-written: Starlette cancels a streaming response when the client disconnects, but
not an ordinary endpoint that is still computing its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from podcrew_core.contracts.errors import PodcrewError

T = TypeVar("T")


class ClientClosedRequest(PodcrewError):
    status = 499
    slug = "client-closed-request"
    title = "The caller went away"
    retryable = False  # nobody is waiting for a second answer either


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # The body has been read already: the next message the server delivers is the
        # disconnect, whenever the client closes the connection.
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientClosedRequest("the caller disconnected; the work was cancelled") from None
        raise
    finally:
        watcher.cancel()
