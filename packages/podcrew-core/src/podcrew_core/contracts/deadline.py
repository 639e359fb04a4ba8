"""A run's remaining time, carried across every hop as a header.

Each hop reads the remaining milliseconds on arrival, works against its own monotonic
clock, and passes on what is left, so clock skew between pods never matters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from podcrew_core.contracts.errors import BadRequest, DeadlineExceeded

DEADLINE_HEADER = "x-podcrew-deadline-ms"
RUN_ID_HEADER = "x-podcrew-run-id"
RETRY_BUDGET_HEADER = "x-podcrew-retry-budget"


@dataclass(frozen=True, slots=True)
class Deadline:
    expires_at: float  # time.monotonic() seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_header(cls, value: str | None, default_s: float) -> Deadline:
        if value is None:
            return cls.after(default_s)
        try:
            remaining_ms = float(value)
        except ValueError as exc:
            raise BadRequest(f"{DEADLINE_HEADER} must be a number of milliseconds") from exc
        return cls.after(remaining_ms / 1000.0)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def header_value(self) -> str:
        return str(max(0, int(self.remaining() * 1000)))

    def require(self, at_least_s: float, what: str) -> None:
        """Refuse work that cannot finish in time, before starting it."""
        if self.remaining() < at_least_s:
            raise DeadlineExceeded(
                f"{what} needs at least {at_least_s:.2f}s but only "
                f"{max(0.0, self.remaining()):.2f}s remain"
            )


_current: ContextVar[Deadline | None] = ContextVar("podcrew_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The deadline of the run or request this task works for, if one was set."""
    return _current.get()


@contextmanager
def deadline_scope(deadline: Deadline) -> Iterator[Deadline]:
    """Make `deadline` the one every LLM call and hop in this task (and its children) obeys."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
