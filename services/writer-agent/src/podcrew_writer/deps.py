"""Typed dependencies: how routes reach what the lifespan built (podcrew_core.runtime.deps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from podcrew_core.llm import LLMProvider
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.deps import part
from podcrew_core.runtime.ledger import Ledger
from podcrew_writer.settings import WriterConfig


@dataclass(frozen=True, slots=True)
class Resources:
    """The writer agent's resources, built in its lifespan."""

    config: WriterConfig
    provider: LLMProvider
    slots: Admission
    ledger: Ledger


# Both routes use every part: they take them together.
Writer = Annotated[Resources, part(Resources, lambda r: r)]
