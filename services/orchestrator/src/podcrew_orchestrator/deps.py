"""Typed dependencies of the api: how routes reach what its lifespan built
(podcrew_core.runtime.deps), and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.admission import Admission
from podcrew_core.runtime.auth import KeyRing, presented_key
from podcrew_core.runtime.deps import part
from podcrew_orchestrator.hub import EventHub
from podcrew_orchestrator.settings import OrchestratorConfig, OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import Submissions

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class ApiResources:
    """The api's resources, built in its lifespan."""

    config: OrchestratorConfig
    keyring: KeyRing
    store: RunStore
    hub: EventHub
    submissions: Submissions
    admission: Admission  # run submissions (and their waits) at once
    streams: Admission  # event streams at once


Store = Annotated[RunStore, part(ApiResources, lambda r: r.store)]
Hub = Annotated[EventHub, part(ApiResources, lambda r: r.hub)]
Settings = Annotated[OrchestratorSettings, part(ApiResources, lambda r: r.config.service)]
LLM = Annotated[LLMSettings, part(ApiResources, lambda r: r.config.llm)]
Slots = Annotated[Admission, part(ApiResources, lambda r: r.admission)]
Streams = Annotated[Admission, part(ApiResources, lambda r: r.streams)]
SubmissionsDep = Annotated[Submissions, part(ApiResources, lambda r: r.submissions)]
KeyRingDep = Annotated[KeyRing, part(ApiResources, lambda r: r.keyring)]


async def get_tenant(request: Request, keyring: KeyRingDep) -> str:
    """The tenant of the presented API key (401 otherwise); `default` when auth is off."""
    if not keyring:
        return DEFAULT_TENANT
    tenant = keyring.tenant(presented_key(request))
    structlog.contextvars.bind_contextvars(tenant=tenant)
    return tenant


Tenant = Annotated[str, Depends(get_tenant)]
