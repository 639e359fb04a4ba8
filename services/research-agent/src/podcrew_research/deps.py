"""Typed dependencies: how routes reach what the lifespan built (podcrew_core.runtime.deps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.deps import part
from podcrew_core.runtime.ledger import Ledger
from podcrew_research.loop import Researcher
from podcrew_research.settings import ResearchConfig, ResearchSettings


@dataclass(frozen=True, slots=True)
class Resources:
    """The research agent's resources, built in its lifespan."""

    config: ResearchConfig
    researcher: Researcher
    slots: Admission
    ledger: Ledger


SettingsDep = Annotated[ResearchSettings, part(Resources, lambda r: r.config.service)]
LLMSettingsDep = Annotated[LLMSettings, part(Resources, lambda r: r.config.llm)]
ResearcherDep = Annotated[Researcher, part(Resources, lambda r: r.researcher)]
SlotsDep = Annotated[Admission, part(Resources, lambda r: r.slots)]
LedgerDep = Annotated[Ledger, part(Resources, lambda r: r.ledger)]
