"""A run's events as typed values, and what a stream does when its connection ends.

The API keeps every event of a run and resumes a stream after the `Last-Event-ID` it is
given. So the client remembers the id of the last event it handed out and, when the
connection drops or the server ends the stream early with `stream.closing` (it is shutting
down; that event has no id), connects again with that id: the caller sees each event once,
in order, with none missing. Ids are compared as well, so an event the server sent twice
(it cannot, but a proxy may replay) is still handed out once.
"""

from __future__ import annotations

import json
from typing import Any

from httpx_sse import ServerSentEvent
from pydantic import BaseModel, Field

from podcrew_client._errors import StreamEnded
from podcrew_client._retry import retry_delay, should_retry
from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.schemas import EventType

CLOSING = "stream.closing"
DEFAULT_MAX_RECONNECTS = 8


class RunEvent(BaseModel):
    """One event of a run: `run.planned`, `tool.called`, `writer.delta`, `run.succeeded` ...

    `type` is an `EventType` for every type this version knows (a newer server's new type
    stays a string); `data` is the event's JSON payload."""

    id: str
    type: EventType | str = Field(
        union_mode="left_to_right",
        description="An EventType, or the type's name when this version does not know it.",
    )
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """The run's final event: nothing follows it."""
        return isinstance(self.type, EventType) and self.type.terminal


def _position(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class Resume:
    """Where a run's stream is, across the connections it takes."""

    def __init__(self, last_event_id: str | None, max_reconnects: int) -> None:
        self.last_id = last_event_id
        self.done = False
        self.max_reconnects = max_reconnects
        self._closing = False
        self._failures = 0

    def headers(self) -> dict[str, str]:
        """The headers of the next connection."""
        return {"Last-Event-ID": self.last_id} if self.last_id else {}

    def accept(self, sse: ServerSentEvent) -> RunEvent | None:
        """The event to hand out for `sse`, or None (a `stream.closing`, a repeat)."""
        if sse.event == CLOSING:
            said = json.loads(sse.data) if sse.data else {}
            if said.get("resume") is False:
                raise StreamEnded(f"the server ended the event stream: {said.get('reason')}")
            self._closing = True
            return None
        if not sse.id or (self.last_id and _position(sse.id) <= _position(self.last_id)):
            return None
        known = sse.event in EventType._value2member_map_
        event = RunEvent(
            id=sse.id,
            type=EventType(sse.event) if known else sse.event,
            data=json.loads(sse.data) if sse.data else {},
        )
        self.last_id, self.done, self._failures = event.id, event.terminal, 0
        return event

    @property
    def closing(self) -> bool:
        """The server announced the end of this connection."""
        return self._closing

    def reconnect_delay(self, error: PodcrewError | None) -> float:
        """The wait before connecting again, after a connection ended early with `error`
        (None: it just ended); raises when connecting again cannot help or is used up."""
        if error is not None and not should_retry(error):
            raise error
        self._failures += 1
        if self._failures > self.max_reconnects:
            if error is not None:
                raise error
            raise StreamEnded("the event stream kept ending before the run's final event")
        closing, self._closing = self._closing, False
        if closing and self._failures == 1:  # the server's own goodbye: reconnect at once
            return 0.0
        return retry_delay(self._failures, error)
