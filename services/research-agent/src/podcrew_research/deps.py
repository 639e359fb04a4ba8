"""Typed dependencies: how routes reach the resources the lifespan created.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, and these only
read an attribute, so a thread hop each would cost far more than the work."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.admission import Admission
from podcrew_research.loop import Researcher
from podcrew_research.settings import ResearchSettings


async def get_settings(request: Request) -> ResearchSettings:
    settings: ResearchSettings = request.app.state.settings
    return settings


async def get_llm_settings(request: Request) -> LLMSettings:
    llm: LLMSettings = request.app.state.llm_settings
    return llm


async def get_researcher(request: Request) -> Researcher:
    researcher: Researcher = request.app.state.researcher
    return researcher


async def get_slots(request: Request) -> Admission:
    slots: Admission = request.app.state.slots
    return slots


SettingsDep = Annotated[ResearchSettings, Depends(get_settings)]
LLMSettingsDep = Annotated[LLMSettings, Depends(get_llm_settings)]
ResearcherDep = Annotated[Researcher, Depends(get_researcher)]
SlotsDep = Annotated[Admission, Depends(get_slots)]
