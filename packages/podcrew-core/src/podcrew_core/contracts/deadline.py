"""A run's remaining time, carried across every hop (in the `Hop`'s headers).

Each hop reads the remaining milliseconds on arrival, works against its own monotonic
clock, and passes on what is left, so clock skew between pods never matters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from podcrew_core.contracts.errors import BadRequest, DeadlineExceeded


@dataclass(frozen=True, slots=True)
class Deadline:
    expires_at: float  # time.monotonic() seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_ms(cls, value: str, what: str) -> Deadline:
        """The deadline `value` milliseconds from now, as a header (`what`) states it."""
        try:
            remaining_ms = float(value)
        except ValueError as exc:
            raise BadRequest(f"{what} must be a number of milliseconds") from exc
        return cls.after(remaining_ms / 1000.0)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def remaining_ms(self) -> str:
        """What is left, in whole milliseconds (never negative), as a header carries it."""
        return str(max(0, int(self.remaining() * 1000)))

    def require(self, at_least_s: float, what: str) -> None:
        """Refuse work that cannot finish in time, before starting it."""
        if self.remaining() < at_least_s:
            raise DeadlineExceeded(
                f"{what} needs at least {at_least_s:.2f}s but only "
                f"{max(0.0, self.remaining()):.2f}s remain"
            )
