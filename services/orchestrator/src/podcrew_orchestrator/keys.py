"""Redis key names: one place, one prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def queue(self) -> str:
        return f"{self.prefix}:runs"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:runs:dead"

    @property
    def group(self) -> str:
        return "workers"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def events(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}:events"
